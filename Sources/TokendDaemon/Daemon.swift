import CLinuxShims
import Dispatch
import Foundation
import Logging
import TokendCore
import TokendIO

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The running daemon, wired: reads the config, makes the real adapters, binds the socket, installs the signal
/// sources, starts the ``Scheduler`` and waits until it stops.
public enum Daemon {
    public struct Options: Sendable {
        public var paths: DaemonPaths
        /// `--credentials-socket`: where credentials.sock is bound (SPEC §10); nil binds it beside the API socket
        /// unless systemd passed the sockets, "none" binds none.
        public var credentialsSocket: String?
        /// `--log-level`, which wins over `log_level` in `tokend.toml`.
        public var logLevelOverride: String?
        #if DEBUG
        /// Test hook (debug builds only): SIGUSR2 blocks the scheduler queue for good, so that the watchdog pings stop
        /// and systemd's WatchdogSec= fires.
        public var stallOnSIGUSR2 = false
        #endif

        public init(paths: DaemonPaths, logLevelOverride: String? = nil) {
            self.paths = paths
            self.logLevelOverride = logLevelOverride
        }
    }

    /// A failure that stops the daemon before it is ready; `errno` goes to systemd as `ERRNO=`.
    public struct StartError: Error, CustomStringConvertible {
        public var message: String
        public var errno: Int32

        public var description: String { message }
    }

    /// Runs the daemon until SIGTERM or SIGINT and returns its exit status: 0 after a clean stop, 1 when it could
    /// not start.
    public static func run(options: Options, notifier: any ServiceNotifier = SystemdNotifier()) -> Int32 {
        let stopped = DispatchSemaphore(value: 0)
        let status = ExitStatus()
        let onStopped: @Sendable (Int32) -> Void = { code in
            status.code = code
            stopped.signal()
        }
        // The start-up config lives only as long as `launch`: the running instances keep what they need of it.
        guard let scheduler = launch(options: options, notifier: notifier, onStopped: onStopped) else { return 1 }
        scheduler.configQueue.async(execute: scheduler.adapters.trimMemory)
        withExtendedLifetime(scheduler) { stopped.wait() }
        return status.code
    }

    /// Reads the config, makes the real adapters and starts the scheduler; nil after reporting a start error.
    private static func launch(
        options: Options,
        notifier: any ServiceNotifier,
        onStopped: @escaping @Sendable (Int32) -> Void
    ) -> Scheduler? {
        let journal = TokendLogHandler.stderrIsJournal(ProcessInfo.processInfo.environment["JOURNAL_STREAM"])
        let bootstrapLogger = Logger(label: "tokend") { label in TokendLogHandler(label: label, level: .info, journal: journal) }
        // Before any secret is read: no core dump may hold one (the unit also sets LimitCORE=0).
        if tokend_set_dumpable(0) != 0 {
            bootstrapLogger.warning("cannot make the process non-dumpable", metadata: ["error": "\(String(cString: strerror(errno)))"])
        }
        var steps = StepTimer()
        let directory = ConfigDirectory(path: options.paths.configDirectory, credentialsDirectory: options.paths.credentialsDirectory)
        let loaded: ConfigLoader.Loaded
        do {
            loaded = try directory.load()
        } catch {
            fail(StartError(message: error.description, errno: error.errno), logger: bootstrapLogger, notifier: notifier)
            return nil
        }
        let configStep = steps.lap("config")
        guard let settings = loaded.settings else {
            for diagnostic in loaded.errors {
                bootstrapLogger.error("config error", metadata: ["error": "\(diagnostic)"])
            }
            fail(StartError(message: "tokend.toml is invalid", errno: EINVAL), logger: bootstrapLogger, notifier: notifier)
            return nil
        }
        let level = Logger.Level(rawValue: options.logLevelOverride ?? settings.logLevel) ?? .info
        LoggingSystem.bootstrap { label in TokendLogHandler(label: label, level: level, journal: journal) }
        var logger = Logger(label: "tokend")
        logger.logLevel = level

        var adapters = realAdapters(settings: settings, directory: directory, notifier: notifier, paths: options.paths, logger: logger)
        if let fleetSettings = settings.fleet {
            do {
                adapters.fleet = try fleetAdapter(fleetSettings, paths: options.paths, logger: logger)
            } catch {
                fail(error, logger: logger, notifier: notifier)
                return nil
            }
        }
        let scheduler = Scheduler(
            settings: settings,
            adapters: adapters,
            options: Scheduler.Options(
                watchdogInterval: SystemdNotifier.watchdogPingInterval(),
                daemonUID: getuid(),
                configDirectory: options.paths.configDirectory
            ),
            logger: logger
        )
        scheduler.startupSteps = [configStep, steps.lap("init")]
        scheduler.onStopped = onStopped
        do {
            try start(scheduler, loaded: loaded, options: options, steps: &steps)
        } catch {
            // What was opened before the failure is closed before the process ends.
            let (closeServer, endpoint) = (scheduler.closeServer, scheduler.adapters.endpoint)
            _ = try? blocking {
                await closeServer()
                await endpoint.shutdown()
            }
            fail(error as? StartError ?? StartError(message: "\(error)", errno: EIO), logger: logger, notifier: notifier)
            return nil
        }
        return scheduler
    }

    private final class ExitStatus: @unchecked Sendable {
        var code: Int32 = 0
    }

    private static func realAdapters(
        settings: DaemonSettings,
        directory: ConfigDirectory,
        notifier: any ServiceNotifier,
        paths: DaemonPaths,
        logger: Logger
    ) -> SchedulerAdapters {
        let (proxy, proxyWarning) = ProxySettings.resolve(
            setting: settings.proxy,
            noProxySetting: settings.noProxy,
            environment: ProcessInfo.processInfo.environment
        )
        if let proxyWarning { logger.warning("proxy", metadata: ["warning": "\(proxyWarning)"]) }
        if let proxy {
            logger.info(
                "outbound proxy",
                metadata: ["proxy": "\(proxy.host):\(proxy.port)", "no_proxy": "\(proxy.noProxy.joined(separator: ","))"]
            )
        }
        return SchedulerAdapters(
            endpoint: HTTPTokenEndpoint(connectTimeout: settings.connectTimeout, requestTimeout: settings.requestTimeout, proxy: proxy),
            cache: FileTokenCache(directory: paths.stateDirectory),
            clock: SystemDaemonClock(),
            notifier: notifier,
            sinks: FileSinkWriter(),
            // The one that loaded the start-up config: its memo makes the first reload as cheap as the next.
            config: directory,
            trimMemory: { _ = tokend_malloc_trim() },
            resolveGroup: { UInt32($0) ?? ConfigDirectory.resolveIdentity(.group, $0) },
            inputs: InputFiles(credentialsDirectory: paths.credentialsDirectory)
        )
    }

    /// The fleet's store, key and host id (SPEC §14); what cannot be read stops the start, naming the file.
    private static func fleetAdapter(_ settings: FleetSettings, paths: DaemonPaths, logger: Logger) throws(StartError) -> FleetAdapter {
        let secrets: FleetSecrets
        switch FleetSecrets.read(settings, credentialsDirectory: paths.credentialsDirectory) {
        case .success(let read): secrets = read
        case .failure(let problem): throw StartError(message: problem.description, errno: EINVAL)
        }
        do {
            let store = try PostgresFleetStore(
                database: settings.database,
                password: secrets.password,
                caFile: settings.caFile,
                logger: logger
            )
            logger.info(
                "fleet",
                metadata: ["database": "\(settings.database.displayName)", "host_id": "\(secrets.hostID)", "lease_s": "\(settings.lease)"]
            )
            return FleetAdapter(store: store, codec: secrets.codec, hostID: secrets.hostID)
        } catch {
            throw StartError(message: "fleet: \(error)", errno: EINVAL)
        }
    }

    private static func fail(_ error: StartError, logger: Logger, notifier: any ServiceNotifier) {
        logger.critical("cannot start", metadata: ["error": "\(error.message)"])
        notifier.notify(.status("cannot start: \(error.message)"), .errno(error.errno))
    }

    /// Start-up in order: the state directory and cache files, the socket, the signal sources, then the instances.
    private static func start(_ scheduler: Scheduler, loaded: ConfigLoader.Loaded, options: Options, steps: inout StepTimer) throws {
        let cache = scheduler.adapters.cache
        do {
            try cache.prepare()
        } catch {
            throw StartError(message: "state directory: \(error)", errno: error.errno)
        }
        // Before the socket and the scheduler exist: the cache files are read on every core.
        let names = Array(loaded.instances.keys)
        let outcomes = Parallel.map(names.count) { cache.load(instance: names[$0]) }
        let cached = Dictionary(uniqueKeysWithValues: zip(names, outcomes))
        scheduler.startupSteps.append(steps.lap("cache"))

        scheduler.published.admin = scheduler.adminPolicy(scheduler.settings)
        raiseOpenFileLimit(toHold: scheduler.settings.connections.maxConnections, logger: scheduler.logger)
        // Read once: sd_listen_fds unsets the variables.
        let passed = SystemdNotifier.listenDescriptors()
        let server = try bindSocket(for: scheduler, options: options, descriptor: passed.first { $0.name != "credentials" }?.descriptor)
        scheduler.closeServer = { await server.close() }
        scheduler.updateSocketLimits = { server.update(socketLimits($0)) }
        scheduler.logger.info("listening", metadata: ["socket": "\(options.paths.socketPath)"])
        let credentials = try bindCredentialsSocket(
            for: scheduler,
            options: options,
            descriptor: passed.first { $0.name == "credentials" }?.descriptor,
            socketActivated: !passed.isEmpty
        )
        scheduler.closeServer = {
            await server.close()
            await credentials?.close()
        }
        // [metrics] listen: bound beside the socket, closed with it.
        let metricsExposure = try MetricsExposure.open(for: scheduler)
        scheduler.closeServer = {
            await server.close()
            await credentials?.close()
            await metricsExposure.close()
        }
        scheduler.startupSteps.append(steps.lap("socket"))

        if scheduler.adapters.fleet != nil {
            // Before the instances: one that starts without a token takes the fleet's. Bounded by the store's call
            // timeout; an unreachable database means starting on our own.
            try blocking { await scheduler.connectFleet() }
            scheduler.startupSteps.append(steps.lap("fleet"))
        }
        scheduler.queue.sync {
            // Signals that arrive from here on are handled once the instances have started.
            let signals = SignalSources(scheduler: scheduler)
            #if DEBUG
            if options.stallOnSIGUSR2 { signals.stallOnSIGUSR2() }
            #endif
            scheduler.signalSources = signals
            scheduler.start(with: loaded, cached: cached)
        }
        metricsExposure.startTextfile(clock: scheduler.adapters.clock)
    }

    /// credentials.sock (SPEC §10): the fd named `credentials` systemd passed, else `--credentials-socket`, else
    /// `credentials.sock` beside the API socket when systemd passed no sockets; nil when there is none.
    ///
    /// Only a path given with `--credentials-socket` must bind: the default one is skipped with a warning (a
    /// socket path too long for it, a directory tokend may not write).
    private static func bindCredentialsSocket(
        for scheduler: Scheduler,
        options: Options,
        descriptor: CInt?,
        socketActivated: Bool
    ) throws -> CredentialSocketServer? {
        let frontend = CredentialFrontend(scheduler: scheduler)
        let answer: CredentialSocketServer.Answer = { address, reply in frontend.answer(address, reply: reply) }
        let socketPath = options.paths.socketPath
        let defaultPath = (socketPath.lastIndex(of: "/").map { String(socketPath[..<$0]) } ?? ".") + "/credentials.sock"
        if let descriptor {
            scheduler.logger.info("using the credentials socket systemd passed", metadata: ["fd": "\(descriptor)"])
            do {
                return try blocking { try await CredentialSocketServer.adopt(descriptor: descriptor, path: defaultPath, answer: answer) }
            } catch {
                throw StartError(message: "credentials socket (fd \(descriptor)): \(error)", errno: EBADF)
            }
        }
        if options.credentialsSocket == "none" { return nil }
        guard let path = options.credentialsSocket ?? (socketActivated ? nil : defaultPath) else {
            scheduler.logger.info("no credentials socket: systemd passed none named 'credentials' (tokend-credentials.socket)")
            return nil
        }
        do {
            // 0600: only the service manager (root) may connect; see CredentialSocketServer.
            let server = try blocking { try await CredentialSocketServer.bind(path: path, mode: 0o600, answer: answer) }
            scheduler.logger.info("listening for credentials", metadata: ["socket": "\(path)"])
            return server
        } catch {
            let errno = (error as? UnixSocketServer.SetupError)?.errno ?? EADDRNOTAVAIL
            if options.credentialsSocket != nil {
                throw StartError(message: "credentials socket: \(error)", errno: errno)
            }
            scheduler.logger.warning("no credentials socket", metadata: ["socket": "\(path)", "error": "\(error)"])
            return nil
        }
    }

    private static func bindSocket(for scheduler: Scheduler, options: Options, descriptor: CInt?) throws -> UnixSocketServer {
        let settings = scheduler.settings
        let path = options.paths.socketPath
        let frontend = SocketFrontend(scheduler: scheduler, logger: scheduler.logger)
        let respond: UnixSocketServer.Responder = { request, respond, openStream in
            frontend.handle(request, respond: respond) { openStream($0) }
        }
        let answerNow: UnixSocketServer.ImmediateResponder = { frontend.answerNow($0) }
        let published = scheduler.published
        let isAdmin: @Sendable (PeerCredentials) -> Bool = { peer in published.admin?.allows(peer) ?? (peer.uid == 0) }
        let onRefused: @Sendable (PeerCredentials, ConnectionAdmission.Refusal) -> Void = { peer, refusal in
            frontend.refused(peer, target: "connection (\(refusal.rawValue))")
        }
        let limits = socketLimits(settings)
        do {
            var group: UInt32?
            if let name = settings.socketGroup {
                group = UInt32(name) ?? ConfigDirectory.resolveIdentity(.group, name)
                if group == nil { throw StartError(message: "socket_group '\(name)' names no group on this host", errno: EINVAL) }
            }
            if let descriptor {
                scheduler.logger.info("using the socket systemd passed", metadata: ["fd": "\(descriptor)"])
                return try blocking {
                    try await UnixSocketServer.adopt(
                        descriptor: descriptor,
                        path: path,
                        limits: limits,
                        isAdmin: isAdmin,
                        onRefused: onRefused,
                        immediate: answerNow,
                        responder: respond
                    )
                }
            }
            let (mode, socketGroup) = (settings.socketMode, group)
            return try blocking {
                try await UnixSocketServer.bind(
                    path: path,
                    mode: mode,
                    group: socketGroup,
                    limits: limits,
                    isAdmin: isAdmin,
                    onRefused: onRefused,
                    immediate: answerNow,
                    responder: respond
                )
            }
        } catch let error as StartError {
            throw error
        } catch let error as UnixSocketServer.SetupError {
            throw StartError(message: "socket: \(error)", errno: error.errno)
        } catch {
            throw StartError(message: "socket \(path): \(error)", errno: EADDRNOTAVAIL)
        }
    }

    /// Raises the soft limit of open files so that `connections` sockets fit beside the daemon's own files (up to the
    /// hard limit): systemd's default soft limit, 1024, is below the default `max_connections` plus the rest, and
    /// past it accepting fails for everyone instead of the connection limits answering.
    static func raiseOpenFileLimit(toHold connections: Int, logger: Logger) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        let wanted = rlim_t(connections + 256)
        guard limit.rlim_cur < wanted else { return }
        let raised = min(wanted, limit.rlim_max)
        var new = limit
        new.rlim_cur = raised
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &new) != 0 || raised < wanted {
            logger.warning(
                "open-file limit below max_connections",
                metadata: ["limit": "\(raised)", "max_connections": "\(connections)"]
            )
        }
    }

    /// The socket's limits from `tokend.toml`.
    static func socketLimits(_ settings: DaemonSettings) -> UnixSocketServer.Limits {
        UnixSocketServer.Limits(connections: settings.connections, requestHeadTimeout: settings.requestHeadTimeout)
    }

    /// Runs async work to completion from synchronous start-up code.
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
        let semaphore = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        Task {
            do {
                box.result = .success(try await body())
            } catch {
                box.result = .failure(error)
            }
            semaphore.signal()
        }
        semaphore.wait()
        guard let result = box.result else { throw StartError(message: "start-up task ended without a result", errno: EIO) }
        return try result.get()
    }

    private final class ResultBox<T>: @unchecked Sendable {
        var result: Result<T, any Error>?
    }
}

/// How long each start-up step took, in milliseconds.
struct StepTimer {
    private var lastMark = DispatchTime.now()

    mutating func lap(_ name: String) -> (step: String, milliseconds: Int) {
        let now = DispatchTime.now()
        defer { lastMark = now }
        return (name, Int((now.uptimeNanoseconds - lastMark.uptimeNanoseconds) / 1_000_000))
    }
}

/// SIGHUP reloads, SIGTERM and SIGINT stop: each a Dispatch signal source on the scheduler queue that sends the event.
final class SignalSources: @unchecked Sendable {
    private var sources: [any DispatchSourceSignal] = []
    private let scheduler: Scheduler

    init(scheduler: Scheduler) {
        self.scheduler = scheduler
        for (number, event) in [
            (SIGHUP, Scheduler.Event.reloadRequested), (SIGTERM, .stopRequested(signal: "SIGTERM")),
            (SIGINT, .stopRequested(signal: "SIGINT")),
        ] {
            install(number) { [unowned scheduler] in scheduler.handle(event) }
        }
    }

    private func install(_ number: Int32, _ handler: @escaping @Sendable () -> Void) {
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: scheduler.queue)
        source.setEventHandler(handler: handler)
        source.activate()
        sources.append(source)
    }

    #if DEBUG
    /// SIGUSR2 blocks the scheduler queue for good (`--debug-stall-on-sigusr2`), so that the watchdog pings stop.
    func stallOnSIGUSR2() {
        let logger = scheduler.logger
        install(SIGUSR2) {
            logger.warning("stalling the scheduler queue on request (--debug-stall-on-sigusr2)")
            while true { sleep(3600) }
        }
    }
    #endif
}
