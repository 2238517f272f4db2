#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CLinuxShims
import DequeModule
import Dispatch
import Foundation
import Synchronization
import HeapModule
import Logging
import TokendCore
import TokendIO

/// The running daemon: one serial Dispatch queue owns every instance's state, one timer drives the schedule,
/// and watchdog pings come from that same queue, so a stuck scheduler stops them.
///
/// Threading: every `var` below is touched only on `queue` (checked with `dispatchPrecondition` where it
/// matters). I/O happens elsewhere: token requests in tasks, cache files on `ioQueue`, config files on
/// `configQueue`, socket requests on NIO's event loops reading `published`.
public final class Daemon: @unchecked Sendable {
    public struct Options: Sendable {
        public var paths: DaemonPaths
        /// `--log-level`, which wins over `log_level` in `tokend.toml`.
        public var logLevelOverride: String?
        /// Test hook (debug builds only): SIGUSR2 blocks the scheduler queue for good, so that the watchdog
        /// pings stop and systemd's WatchdogSec= fires.
        public var stallOnSIGUSR2: Bool

        public init(paths: DaemonPaths, logLevelOverride: String? = nil, stallOnSIGUSR2: Bool = false) {
            self.paths = paths
            self.logLevelOverride = logLevelOverride
            self.stallOnSIGUSR2 = stallOnSIGUSR2
        }
    }

    /// A failure that stops the daemon before it is ready; `errno` goes to systemd as `ERRNO=`.
    public struct StartError: Error, CustomStringConvertible {
        public var message: String
        public var errno: Int32

        public var description: String { message }
    }

    /// A class: the scheduler reads and changes instances in place, and `STATUS=` walks all of them, without
    /// copying a resolved definition each time.
    private final class RunningInstance {
        var resolved: ResolvedInstance
        /// The state machine, in the immutable box that the socket's snapshot shares once published: one copy of
        /// each instance's state, not one here and one there (3.8 MB at 10,000 instances). A change makes a new box.
        private(set) var state: PublishedMachine
        let generation: Int

        var machine: InstanceStateMachine {
            get { state.machine }
            set { state = PublishedMachine(newValue) }
        }

        init(resolved: ResolvedInstance, machine: InstanceStateMachine, generation: Int) {
            self.resolved = resolved
            self.state = PublishedMachine(machine)
            self.generation = generation
        }
    }

    /// A `min_valid` request waiting for the instance's refresh.
    private struct Waiter {
        var id: Int
        var request: APIRequest
        var minValid: Double
        var respond: @Sendable (APIResponse) -> Void
    }

    private let options: Options
    private let logger: Logger
    private let notifier: any ServiceNotifier
    private let clock: any WallClock
    private let endpoint: any TokenEndpoint
    private let cache: FileTokenCache
    private let configDirectory: ConfigDirectory
    private let published = PublishedInstances()
    private let router = APIRouter()
    private let metrics = TokendMetrics()

    private let queue = DispatchQueue(label: "tokend.scheduler")
    private let ioQueue = DispatchQueue(label: "tokend.io")
    /// Config directory reads on SIGHUP.
    private let configQueue = DispatchQueue(label: "tokend.config")
    /// Cache writes not yet taken by the I/O queue, the latest per instance: the queue writes whatever has
    /// gathered as one batch with one flush (10,000 first tokens are not 20,000 fsyncs one after another).
    private let pendingStores = Mutex(PendingStores())

    private struct PendingStores {
        var records: [String: CacheRecord] = [:]
        var flushQueued = false
    }

    private var settings: DaemonSettings
    private var instances: [String: RunningInstance] = [:]
    private var schedule = Heap<ScheduleEntry>()
    private var timer: (any DispatchSourceTimer)?
    private var armedFor: Date?
    private var watchdog: (any DispatchSourceTimer)?
    private var signalSources: [any DispatchSourceSignal] = []
    private var nextGeneration = 0
    private var inFlight = 0
    private var inFlightByHost: [String: Int] = [:]
    /// Instances due for a fetch that the concurrency limits hold back, oldest first, by endpoint host. An entry
    /// counts only while its name is in `queuedForFetch` (removal is lazy).
    private var waitingByHost: [String: Deque<String>] = [:]
    private var queuedForFetch: Set<String> = []
    /// Instances that have neither a token nor a finished attempt; READY=1 waits for this to empty.
    private var unsettled: Set<String> = []
    private var statusUpdatePending = false
    private var waiters: [String: [Waiter]] = [:]
    /// Open `watch` streams by instance.
    private var watchers: [String: [EventStream]] = [:]
    private var nextWaiterID = 0
    /// The peak number of token requests in flight, overall and to one host (for tests and benchmarks).
    private var peakInFlight = 0
    private var peakInFlightPerHost = 0
    private var extendTimer: (any DispatchSourceTimer)?
    private var clockWatch: (any DispatchSourceTimer)?
    /// Wall-clock and boot-time readings at the last clock check: a difference in their progress is a clock step.
    private var lastClockReading: (wall: Date, boot: Double)?
    private var configErrorCount = 0
    private var rejectedReload: String?
    private var isReady = false
    private var isStopping = false
    private var lastStatus = ""
    private var server: UnixSocketServer?
    private var random = SplitMix64()
    /// How long each start-up step took (milliseconds, in order), logged with READY=1.
    private var startupSteps: [(step: String, milliseconds: Int)] = []

    private init(
        options: Options,
        settings: DaemonSettings,
        logger: Logger,
        notifier: any ServiceNotifier,
        clock: any WallClock,
        configDirectory: ConfigDirectory
    ) {
        self.options = options
        self.settings = settings
        self.logger = logger
        self.notifier = notifier
        self.clock = clock
        let (proxy, proxyWarning) = ProxySettings.resolve(
            setting: settings.proxy,
            noProxySetting: settings.noProxy,
            environment: ProcessInfo.processInfo.environment
        )
        if let proxyWarning { logger.warning("proxy", metadata: ["warning": "\(proxyWarning)"]) }
        if let proxy {
            logger.info("outbound proxy", metadata: ["proxy": "\(proxy.host):\(proxy.port)", "no_proxy": "\(proxy.noProxy.joined(separator: ","))"])
        }
        self.endpoint = HTTPTokenEndpoint(
            connectTimeout: settings.connectTimeout,
            requestTimeout: settings.requestTimeout,
            proxy: proxy
        )
        self.cache = FileTokenCache(directory: options.paths.stateDirectory)
        // The one that loaded the start-up config: its memo makes the first reload as cheap as the next.
        self.configDirectory = configDirectory
    }

    /// Starts the daemon and never returns: on SIGTERM/SIGINT it exits 0, on a start error non-zero.
    public static func run(options: Options, notifier: any ServiceNotifier = SystemdNotifier()) -> Never {
        // The start-up config (a Loaded with every instance) is released when `started` returns; the daemon lives
        // for as long as the process.
        let daemon = started(options: options, notifier: notifier)
        daemon.returnFreedMemory()
        withExtendedLifetime(daemon) { dispatchMain() }
    }

    /// Gives the pages that loading a config freed (TOML trees, file texts, the workers' arenas) back to the
    /// system; malloc would otherwise keep them as part of the daemon's RSS. Off the scheduler queue.
    private func returnFreedMemory() {
        configQueue.async { _ = tokend_malloc_trim() }
    }

    private static func started(options: Options, notifier: any ServiceNotifier) -> Daemon {
        let journal = TokendLogHandler.stderrIsJournal(ProcessInfo.processInfo.environment["JOURNAL_STREAM"])
        var bootstrapLogger = Logger(label: "tokend") { label in
            TokendLogHandler(label: label, level: .info, journal: journal)
        }
        let directory = ConfigDirectory(
            path: options.paths.configDirectory,
            credentialsDirectory: options.paths.credentialsDirectory
        )
        let loaded: ConfigLoader.Loaded
        var stepStart = DispatchTime.now()
        func step(_ name: String) -> (step: String, milliseconds: Int) {
            let end = DispatchTime.now()
            defer { stepStart = end }
            return (name, Int((end.uptimeNanoseconds - stepStart.uptimeNanoseconds) / 1_000_000))
        }
        do {
            loaded = try directory.load()
        } catch {
            fail(StartError(message: error.description, errno: error.errno), logger: bootstrapLogger, notifier: notifier)
        }
        let configStep = step("config")
        guard let settings = loaded.settings else {
            for diagnostic in loaded.errors {
                bootstrapLogger.error("config error", metadata: ["error": "\(diagnostic)"])
            }
            fail(StartError(message: "tokend.toml is invalid", errno: EINVAL), logger: bootstrapLogger, notifier: notifier)
        }
        let levelName = options.logLevelOverride ?? settings.logLevel
        let level = Logger.Level(rawValue: levelName) ?? .info
        bootstrapLogger.logLevel = level
        LoggingSystem.bootstrap { label in TokendLogHandler(label: label, level: level, journal: journal) }
        var logger = Logger(label: "tokend")
        logger.logLevel = level

        let daemon = Daemon(
            options: options,
            settings: settings,
            logger: logger,
            notifier: notifier,
            clock: SystemClock(),
            configDirectory: directory
        )
        daemon.startupSteps = [configStep, step("init")]
        do {
            try daemon.start(with: loaded, step: step)
        } catch let error as StartError {
            fail(error, logger: logger, notifier: notifier)
        } catch {
            fail(StartError(message: "\(error)", errno: EIO), logger: logger, notifier: notifier)
        }
        return daemon
    }

    private static func fail(_ error: StartError, logger: Logger, notifier: any ServiceNotifier) -> Never {
        logger.critical("cannot start", metadata: ["error": "\(error.message)"])
        notifier.notify("STATUS=cannot start: \(error.message)\nERRNO=\(error.errno)")
        exit(1)
    }

    // MARK: - Start-up

    private func start(
        with loaded: ConfigLoader.Loaded,
        step: (String) -> (step: String, milliseconds: Int)
    ) throws {
        do {
            try cache.prepare()
        } catch {
            throw StartError(message: "state directory: \(error)", errno: error.errno)
        }
        // Before the socket and the scheduler exist: the cache files are read on every core.
        let names = Array(loaded.instances.keys)
        let cache = self.cache
        let outcomes = Parallel.map(names.count) { cache.load(instance: names[$0]) }
        let cached = Dictionary(uniqueKeysWithValues: zip(names, outcomes))
        startupSteps.append(step("cache"))

        published.admin = adminPolicy(settings)
        let server: UnixSocketServer
        do {
            let path = options.paths.socketPath
            let mode = settings.socketMode
            var group: UInt32?
            if let name = settings.socketGroup {
                group = UInt32(name) ?? ConfigDirectory.resolveIdentity(.group, name)
                if group == nil { throw StartError(message: "socket_group '\(name)' names no group on this host", errno: EINVAL) }
            }
            let passed = SystemdNotifier.listenDescriptors()
            let respond: UnixSocketServer.Responder = { [unowned self] request, respond, openStream in
                self.handle(request, respond: respond, openStream: openStream)
            }
            let answerNow: UnixSocketServer.ImmediateResponder = { [unowned self] request in self.answerNow(request) }
            if let descriptor = passed.first {
                logger.info("using the socket systemd passed", metadata: ["fd": "\(descriptor)", "fds": "\(passed.count)"])
                server = try Self.blocking {
                    try await UnixSocketServer.adopt(descriptor: descriptor, path: path, immediate: answerNow, responder: respond)
                }
            } else {
                let socketGroup = group
                server = try Self.blocking {
                    try await UnixSocketServer.bind(
                        path: path,
                        mode: mode,
                        group: socketGroup,
                        immediate: answerNow,
                        responder: respond
                    )
                }
            }
        } catch let error as StartError {
            throw error
        } catch let error as UnixSocketServer.SetupError {
            throw StartError(message: "socket: \(error)", errno: error.errno)
        } catch {
            throw StartError(message: "socket \(options.paths.socketPath): \(error)", errno: EADDRNOTAVAIL)
        }
        logger.info("listening", metadata: ["socket": "\(options.paths.socketPath)"])
        startupSteps.append(step("socket"))

        queue.sync {
            self.server = server
            self.installSignalHandlers()
            self.installWatchdog()
            let timer = DispatchSource.makeTimerSource(queue: self.queue)
            timer.setEventHandler { [unowned self] in self.timerFired() }
            timer.activate()
            self.timer = timer
            self.installClockWatch()
            self.apply(loaded, cached: cached)
            self.startupSteps.append(step("apply"))
            self.published.isLoaded = true
            self.queue.asyncAfter(deadline: .now() + self.settings.startupTimeout) { [unowned self] in
                self.becomeReady(force: true)
            }
            self.becomeReady(force: false)
            if !self.isReady { self.installStartupExtension() }
        }
    }

    /// The answer to the request programs make on every call, `GET /v1/tokens/NAME` (with no query but `format`)
    /// from a caller allowed to read a token that is servable now, made on the calling event loop from the snapshot
    /// without anything `handle` allocates; nil for every other request, which then goes to `handle` (refusals and
    /// their log line, 404s, 503s, start-up waits, `min_valid`, every other endpoint). Both give the same answer
    /// where this one answers.
    private func answerNow(_ request: APIRequest) -> APIResponse? {
        guard published.isLoaded, request.method == "GET", request.query.keys.allSatisfy({ $0 == "format" }),
            let name = APIRouter.tokenName(inPath: request.path), let entry = published.published(named: name)
        else { return nil }
        if let peer = request.peer, let policy = published.access(named: name), !policy.allows(peer) { return nil }
        let now = clock.now()
        guard let token = entry.machine.servableToken(at: now) else { return nil }
        let response = entry.tokenAnswer(name: name, token: token, request: request, now: now, router: router)
        metrics.requestAnswered(endpoint: "token", status: response.status)
        return response
    }

    /// Answers one socket request on the calling event loop: from the published snapshot when it can, through the
    /// scheduler queue for commands and for min_valid requests the current token cannot satisfy.
    private func handle(
        _ request: APIRequest,
        respond answer: @escaping @Sendable (APIResponse) -> Void,
        openStream: @escaping @Sendable (String) -> EventStream
    ) {
        guard published.isLoaded else {
            // Start-up is still on the scheduler queue; once it is done the snapshot has every instance.
            queue.async { self.handle(request, respond: answer, openStream: openStream) }
            return
        }
        let now = clock.now()
        var router = self.router
        router.admin = published.admin
        let route = router.route(request)
        let metrics = self.metrics
        let endpoint = Self.endpointLabel(route)
        let respond: @Sendable (APIResponse) -> Void = { response in
            metrics.requestAnswered(endpoint: endpoint, status: response.status)
            answer(response)
        }
        if let refusal = router.refusal(for: route, request: request, instances: published) {
            if refusal.status == 403, let peer = request.peer {
                logger.warning(
                    "request refused",
                    metadata: ["peer.uid": "\(peer.uid)", "peer.pid": "\(peer.pid)", "path": "\(String(request.path.prefix(200)))"]
                )
            }
            respond(refusal)
            return
        }
        switch route {
        case .refresh(let name):
            queue.async { self.refreshRequested(name, respond: respond) }
        case .invalidate(let name):
            guard let fingerprint = router.invalidatedFingerprint(request) else {
                respond(router.error(400, "bad_fingerprint", #"expected {"fingerprint":"<first 16 hex digits of sha256(token)>"}"#))
                return
            }
            queue.async { self.invalidationRequested(name, fingerprint: fingerprint, respond: respond) }
        case .watch(let name):
            metrics.requestAnswered(endpoint: endpoint, status: 200)
            queue.async { self.watchRequested(name, openStream: openStream) }
        case .metrics:
            let body = metrics.render(published.allInstances(), now: now)
            respond(APIResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: body))
        case .token(let name):
            // A min_valid request that the published token cannot satisfy goes to the scheduler, which starts or
            // joins one shared refresh. So does, during start-up (before READY=1), a plain request for an instance
            // whose first attempt has not finished: a socket-activated daemon's first caller waits for the token
            // instead of getting 503. Everything else is answered from the snapshot.
            // One copy of the instance's state serves the whole answer (it may be removed meanwhile: 404).
            guard let machine = published.instance(named: name) else {
                respond(router.unknownInstance(name))
                return
            }
            let explicit = request.query.isEmpty ? nil : router.minValidRequest(request)
            let wanted = explicit ?? (request.query["min_valid"] == nil ? (name, 0) : nil)
            if let wanted {
                let validFor = machine.servableToken(at: now)?.serveUntil.timeIntervalSince(now)
                if validFor.map({ $0 < wanted.minValid }) ?? (explicit != nil || (!machine.hasSettled && !published.isReady)) {
                    queue.async { self.tokenRequested(wanted.name, minValid: wanted.minValid, request: request, respond: respond) }
                    return
                }
            }
            respond(router.token(named: name, machine: machine, request: request, now: now))
        default:
            respond(router.respond(to: request, instances: published, now: now))
        }
    }

    private static func endpointLabel(_ route: APIRouter.Route) -> String {
        switch route {
        case .token: "token"
        case .watch: "watch"
        case .invalidate: "invalidate"
        case .instances: "instances"
        case .refresh: "refresh"
        case .health: "health"
        case .metrics: "metrics"
        case .notFound, .methodNotAllowed: "other"
        }
    }

    /// `GET /v1/tokens/{name}/watch`: the current token as an event, then each new one, until the client leaves, the
    /// instance is removed or tokend stops.
    private func watchRequested(_ name: String, openStream: @escaping @Sendable (String) -> EventStream) {
        dispatchPrecondition(condition: .onQueue(queue))
        let stream = openStream("text/event-stream")
        guard !isStopping, let running = instances[name] else {
            stream.finish()
            return
        }
        let now = clock.now()
        if let token = running.machine.servableToken(at: now) {
            stream.send(router.tokenEvent(name: name, token: token, now: now))
        }
        watchers[name, default: []].append(stream)
    }

    private func notifyWatchers(_ name: String, token: IssuedToken) {
        guard var streams = watchers[name] else { return }
        streams.removeAll { !$0.isOpen }
        let event = router.tokenEvent(name: name, token: token, now: clock.now())
        for stream in streams { stream.send(event) }
        watchers[name] = streams.isEmpty ? nil : streams
    }

    /// `POST /v1/instances/{name}/refresh`: refresh now, joining a refresh in flight.
    private func refreshRequested(_ name: String, respond: @escaping @Sendable (APIResponse) -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !isStopping, instances[name] != nil else {
            respond(router.unknownInstance(name))
            return
        }
        let actions = instances[name]!.machine.refreshRequested(now: clock.now())
        logger.info("refresh requested", metadata: ["instance": "\(name)"])
        perform(actions, for: name)
        respond(router.json(202, API.CommandBody(instance: name, accepted: true, message: "refresh started")))
    }

    /// `POST /v1/tokens/{name}/invalidate`: drop the token if the caller's fingerprint still names it.
    private func invalidationRequested(
        _ name: String,
        fingerprint: String,
        respond: @escaping @Sendable (APIResponse) -> Void
    ) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !isStopping, instances[name] != nil else {
            respond(router.unknownInstance(name))
            return
        }
        let (invalidated, actions) = instances[name]!.machine.tokenInvalidated(fingerprint: fingerprint, now: clock.now())
        if invalidated {
            logger.warning("token invalidated by a client", metadata: ["instance": "\(name)", "token": "\(fingerprint)"])
            removeSink(instances[name]!.resolved.sink)
        }
        perform(actions, for: name)
        scheduleStatusUpdate()
        respond(
            router.json(
                invalidated ? 202 : 200,
                API.CommandBody(
                    instance: name,
                    accepted: invalidated,
                    message: invalidated ? "token dropped; refreshing" : "fingerprint is not the current token's; nothing changed"
                )
            )
        )
    }

    private func adminPolicy(_ settings: DaemonSettings) -> AdminPolicy {
        let gid = settings.adminGroup.flatMap { UInt32($0) ?? ConfigDirectory.resolveIdentity(.group, $0) }
        if let group = settings.adminGroup, gid == nil {
            logger.error("admin_group names no group on this host; only root and the daemon's uid are admins", metadata: ["admin_group": "\(group)"])
        }
        return AdminPolicy(daemonUID: getuid(), adminGID: gid)
    }

    /// Runs async work to completion from synchronous start-up code (before `dispatchMain`).
    private static func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
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
        return try box.result!.get()
    }

    private final class ResultBox<T>: @unchecked Sendable {
        var result: Result<T, any Error>?
    }

    private func installSignalHandlers() {
        for signalNumber in [SIGHUP, SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            source.setEventHandler { [unowned self] in
                if signalNumber == SIGHUP {
                    self.reload()
                } else {
                    self.stop(signal: signalNumber)
                }
            }
            source.activate()
            signalSources.append(source)
        }
        #if DEBUG
        if options.stallOnSIGUSR2 {
            signal(SIGUSR2, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: SIGUSR2, queue: queue)
            source.setEventHandler { [logger] in
                logger.warning("stalling the scheduler queue on request (--debug-stall-on-sigusr2)")
                while true { sleep(3600) }
            }
            source.activate()
            signalSources.append(source)
        }
        #endif
    }

    private func installWatchdog() {
        guard let interval = SystemdNotifier.watchdogPingInterval() else { return }
        let source = DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: .now(), repeating: interval, leeway: .milliseconds(50))
        source.setEventHandler { [unowned self] in
            self.notifier.notify("WATCHDOG=1")
        }
        source.activate()
        watchdog = source
        logger.debug("watchdog enabled", metadata: ["interval_s": "\(interval)"])
    }

    /// While the first round runs, asks systemd for more start-up time every few seconds (`EXTEND_TIMEOUT_USEC`), so
    /// that a long first round never hits `TimeoutStartSec=` before `startup_timeout` sends READY=1 anyway.
    private func installStartupExtension() {
        let source = DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: .now(), repeating: 5, leeway: .milliseconds(100))
        source.setEventHandler { [unowned self] in
            guard !self.isReady else { return }
            self.notifier.notify("EXTEND_TIMEOUT_USEC=15000000")
        }
        source.activate()
        extendTimer = source
    }

    /// Checks every 10 s (and at every timer fire) whether the wall clock was stepped relative to boot time
    /// (which also counts suspend): a step moves every instance's times with it; a suspend needs nothing, since
    /// overdue wake-ups fire at once.
    private func installClockWatch() {
        lastClockReading = (clock.now(), Self.bootTime())
        let source = DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: .now() + 10, repeating: 10, leeway: .seconds(1))
        // Only the clock: state changes that time brings (expiry) have wake-ups of their own, so an idle daemon
        // does O(1) work here whatever the number of instances.
        source.setEventHandler { [unowned self] in
            self.checkClock()
        }
        source.activate()
        clockWatch = source
    }

    private func checkClock() {
        dispatchPrecondition(condition: .onQueue(queue))
        let wall = clock.now()
        let boot = Self.bootTime()
        defer { lastClockReading = (wall, boot) }
        guard let last = lastClockReading else { return }
        let step = wall.timeIntervalSince(last.wall) - (boot - last.boot)
        guard abs(step) > 2 else { return }
        logger.warning("wall clock stepped; rescheduling every instance", metadata: ["step_s": "\(Int(step))"])
        for name in instances.keys.sorted() {
            let actions = instances[name]!.machine.clockStepped(by: step)
            perform(actions, for: name)
            if let token = instances[name]?.machine.token {
                let generation = instances[name]!.generation
                push(ScheduleEntry(due: token.serveUntil, name: name, generation: generation, purpose: .expiry))
            }
        }
        arm()
    }

    private static func bootTime() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_BOOTTIME, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    /// READY=1 with the status line, after start-up (logged with how long each step took) and after a reload.
    private func notifyReady() {
        lastStatus = statusLine()
        notifier.notify("READY=1\nSTATUS=\(lastStatus)")
        logger.info(
            "ready",
            metadata: Logger.Metadata(
                uniqueKeysWithValues: [("status", .string(lastStatus))]
                    + startupSteps.map { ("\($0.step)_ms", .string("\($0.milliseconds)")) }
            )
        )
        startupSteps = []
    }

    private func becomeReady(force: Bool) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !isReady, !isStopping else { return }
        let unsettled = self.unsettled.count
        guard force || unsettled == 0 else { return }
        isReady = true
        published.isReady = true
        extendTimer?.cancel()
        extendTimer = nil
        // The start-up's (and a first round's) responses, request buffers and parse trees are freed by now: their
        // pages go back before READY=1, so that a ready daemon's RSS is its working set (a few milliseconds, in
        // the `ready` line as trim_ms).
        let trimStart = DispatchTime.now()
        _ = tokend_malloc_trim()
        startupSteps.append(("trim", Int((DispatchTime.now().uptimeNanoseconds - trimStart.uptimeNanoseconds) / 1_000_000)))
        notifyReady()
        // Start-up callers still waiting for a first token (READY=1 came by startup_timeout) get their 503 now.
        for name in Array(waiters.keys) where instances[name]?.machine.token == nil {
            let released = waiters[name]!.filter { $0.minValid == 0 }
            waiters[name]!.removeAll { $0.minValid == 0 }
            if waiters[name]!.isEmpty { waiters[name] = nil }
            let lastError = instances[name]?.machine.lastFailure
            for waiter in released {
                waiter.respond(
                    router.unavailable(
                        name: name,
                        message: lastError.map { "no valid token: \($0.message)" } ?? "no valid token yet",
                        lastError: lastError?.code,
                        retryAfter: 1
                    )
                )
            }
        }
    }

    // MARK: - Configuration

    /// Applies a loaded directory: new instances start, removed ones stop and lose their cache file, changed ones
    /// refetch, unchanged ones keep their token and schedule; instances of failed files keep their last good run.
    private func apply(_ loaded: ConfigLoader.Loaded, cached: [String: CacheLoadOutcome]) {
        dispatchPrecondition(condition: .onQueue(queue))
        let now = clock.now()
        let starting = !published.isLoaded
        var startedFromCache = 0
        for diagnostic in loaded.diagnostics {
            if diagnostic.severity == .error {
                logger.error("config error", metadata: ["error": "\(diagnostic)"])
            } else {
                logger.warning("config warning", metadata: ["warning": "\(diagnostic)"])
            }
        }
        configErrorCount = loaded.errors.count
        if let newSettings = loaded.settings {
            settings = newSettings
            published.admin = adminPolicy(newSettings)
        }

        for name in instances.keys.sorted()
        where loaded.instances[name] == nil && !loaded.failedInstances.contains(name) {
            removeSink(instances[name]?.resolved.sink)
            for stream in watchers.removeValue(forKey: name) ?? [] { stream.finish() }
            instances.removeValue(forKey: name)
            published.remove(name)
            metrics.instanceRemoved(name)
            queuedForFetch.remove(name)
            unsettled.remove(name)
            for waiter in waiters.removeValue(forKey: name) ?? [] {
                waiter.respond(router.respond(to: waiter.request, instances: published, now: now))
            }
            removeCacheFile(name)
            logger.info("instance removed", metadata: ["instance": "\(name)"])
        }

        for name in loaded.instances.keys.sorted() {
            guard let resolved = loaded.instances[name] else { continue }
            let policy = RefreshPolicy(settings.refresh.applying(resolved.definition.refresh))
            published.publishAccess(name, resolved.access)
            if let running = instances[name], running.resolved.fingerprintDigest == resolved.fingerprintDigest {
                if running.resolved.sink != resolved.sink {
                    if running.resolved.sink?.path != resolved.sink?.path { removeSink(running.resolved.sink) }
                    if let token = running.machine.servableToken(at: now) { writeSink(name, token: token, to: resolved.sink) }
                }
                running.resolved = resolved
                running.machine.configChanged(policy: policy)
                continue
            }
            let replacing = instances[name] != nil
            var record: CacheRecord?
            switch cached[name] {
            case .loaded(let found)? where found.fingerprint == resolved.fingerprint && !replacing:
                record = found
            case .movedAside(let reason)?:
                logger.warning("cache file moved aside", metadata: ["instance": "\(name)", "reason": "\(reason)"])
            default:
                break
            }
            if replacing {
                removeSink(instances[name]?.resolved.sink)
                removeCacheFile(name)
                queuedForFetch.remove(name)
            }
            nextGeneration += 1
            instances[name] = RunningInstance(
                resolved: resolved,
                machine: InstanceStateMachine(policy: policy),
                generation: nextGeneration
            )
            // At start-up one line sums them up (10,000 lines cost a second and flood the journal).
            logger.log(
                level: starting ? .debug : .info,
                replacing ? "instance changed" : "instance added",
                metadata: ["instance": "\(name)", "cached_token": "\(record != nil)"]
            )
            if record != nil { startedFromCache += 1 }
            let actions = instances[name]!.machine.started(cached: record?.token, now: now, using: &random)
            if instances[name]!.machine.hasSettled { unsettled.remove(name) } else { unsettled.insert(name) }
            perform(actions, for: name)
            if let token = instances[name]?.machine.token {
                let generation = instances[name]!.generation
                push(ScheduleEntry(due: token.serveUntil, name: name, generation: generation, purpose: .expiry))
                writeSink(name, token: token, to: resolved.sink)
            }
        }
        if starting {
            logger.info("instances started", metadata: ["instances": "\(instances.count)", "cached_tokens": "\(startedFromCache)"])
        }
        updateStatus()
    }

    private func reload() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !isStopping else { return }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let monotonicMicroseconds = UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
        notifier.notify("RELOADING=1\nMONOTONIC_USEC=\(monotonicMicroseconds)")
        logger.info("reloading", metadata: ["config_dir": "\(options.paths.configDirectory)"])
        let directory = configDirectory
        let cache = self.cache
        // A running instance never takes its token from the cache file (an unchanged one keeps its own, a changed
        // one refetches): only new names are looked up.
        let running = Set(instances.keys)
        // The config is read on its own queue, so that a reload does not wait behind a backlog of cache writes;
        // the cache files of new instances are then read on the I/O queue, after any write of them.
        configQueue.async { [unowned self] in
            let outcome: Result<ConfigLoader.Loaded, ConfigDirectory.Unreadable>
            do throws(ConfigDirectory.Unreadable) {
                outcome = .success(try directory.load())
            } catch {
                outcome = .failure(error)
            }
            self.ioQueue.async {
                var cached: [String: CacheLoadOutcome] = [:]
                if case .success(let loaded) = outcome {
                    for name in loaded.instances.keys where !running.contains(name) {
                        cached[name] = cache.load(instance: name)
                    }
                }
                let loadedCache = cached
                self.queue.async { self.finishReload(outcome, cached: loadedCache) }
            }
        }
    }

    private func finishReload(_ outcome: Result<ConfigLoader.Loaded, ConfigDirectory.Unreadable>, cached: [String: CacheLoadOutcome]) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !isStopping else { return }
        switch outcome {
        case .failure(let error):
            rejectedReload = error.description
            logger.error("reload rejected", metadata: ["error": "\(error)"])
        case .success(let loaded) where loaded.settings == nil:
            rejectedReload = "tokend.toml is invalid"
            for diagnostic in loaded.errors {
                logger.error("config error", metadata: ["error": "\(diagnostic)"])
            }
            logger.error("reload rejected", metadata: ["error": "tokend.toml is invalid; old settings kept"])
        case .success(let loaded):
            rejectedReload = nil
            apply(loaded, cached: cached)
            logger.info("reloaded", metadata: ["instances": "\(instances.count)", "errors": "\(loaded.errors.count)"])
            returnFreedMemory()
        }
        notifyReady()
    }

    // MARK: - Cache writes

    private func queueStore(_ record: CacheRecord) {
        let queueFlush = pendingStores.withLock { pending in
            pending.records[record.instance] = record
            defer { pending.flushQueued = true }
            return !pending.flushQueued
        }
        guard queueFlush else { return }
        ioQueue.async { [unowned self] in
            let batch = self.pendingStores.withLock { pending in
                defer {
                    pending.records = [:]
                    pending.flushQueued = false
                }
                return Array(pending.records.values)
            }
            for failure in self.cache.store(batch: batch) {
                self.logger.error("cache write failed", metadata: ["instance": "\(failure.instance)", "error": "\(failure.error)"])
            }
            // A large batch (a first round, tokens issued together) freed its records and the fetches' buffers
            // before it: hand those pages back, as after a config load (10,000 instances: 3-5 MiB of RSS).
            if batch.count >= Self.trimAfterBatch { _ = tokend_malloc_trim() }
        }
    }

    /// Cache batches of at least this many records are followed by `malloc_trim`.
    static let trimAfterBatch = 1_000

    /// Removes the instance's cache file after any write of it already taken by the I/O queue; a write not yet
    /// taken is dropped.
    private func removeCacheFile(_ name: String) {
        _ = pendingStores.withLock { $0.records.removeValue(forKey: name) }
        let cache = self.cache
        ioQueue.async { cache.remove(instance: name) }
    }

    // MARK: - Scheduling

    private func perform(_ actions: [InstanceStateMachine.Action], for name: String) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let running = instances[name] else { return }
        for action in actions {
            switch action {
            case .fetch:
                startFetch(name)
            case .scheduleRefresh(let due):
                push(ScheduleEntry(due: due, name: name, generation: running.generation, purpose: .attempt))
            case .store(let token):
                queueStore(CacheRecord(instance: name, token: token, fingerprint: running.resolved.fingerprint))
                writeSink(name, token: token, to: running.resolved.sink)
                notifyWatchers(name, token: token)
                push(ScheduleEntry(due: token.serveUntil, name: name, generation: running.generation, purpose: .expiry))
            case .serveWaiters(let token):
                let now = clock.now()
                for waiter in waiters.removeValue(forKey: name) ?? [] {
                    if token.serveUntil.timeIntervalSince(now) >= waiter.minValid {
                        waiter.respond(router.tokenResponse(name: name, token: token, request: waiter.request, now: now))
                    } else {
                        waiter.respond(
                            router.unavailable(
                                name: name,
                                message: "the new token is valid for only \(Int(token.serveUntil.timeIntervalSince(now))) s, less than min_valid",
                                lastError: nil,
                                retryAfter: 1
                            )
                        )
                    }
                }
            case .rejectWaiters(let failure):
                for waiter in waiters.removeValue(forKey: name) ?? [] {
                    waiter.respond(
                        router.unavailable(name: name, message: "refresh failed: \(failure.message)", lastError: failure.code, retryAfter: 1)
                    )
                }
            }
        }
        published.publish(name, instances[name]!.state)
    }

    /// Writes the token to the instance's sink file, if it has one (on the I/O queue).
    private func writeSink(_ name: String, token: IssuedToken, to target: SinkTarget?) {
        guard let target else { return }
        let logger = self.logger
        ioQueue.async {
            do {
                try FileSink.write(token.accessToken, to: target)
            } catch {
                logger.error("sink write failed", metadata: ["instance": "\(name)", "error": "\(error)"])
            }
        }
    }

    private func removeSink(_ target: SinkTarget?) {
        guard let target else { return }
        ioQueue.async { FileSink.remove(target) }
    }

    /// A client asked for a token valid for at least `minValid` seconds and the published one is not.
    private func tokenRequested(
        _ name: String,
        minValid: Double,
        request: APIRequest,
        respond: @escaping @Sendable (APIResponse) -> Void
    ) {
        dispatchPrecondition(condition: .onQueue(queue))
        let now = clock.now()
        guard !isStopping, instances[name] != nil else {
            respond(router.respond(to: request, instances: published, now: now))
            return
        }
        let (answer, actions) = instances[name]!.machine.tokenRequested(minValid: minValid, now: now)
        switch answer {
        case .serve(let token):
            respond(router.tokenResponse(name: name, token: token, request: request, now: now))
        case .reject(let reason):
            respond(router.unavailable(name: name, message: reason, lastError: instances[name]!.machine.lastFailure?.code, retryAfter: 1))
        case .wait:
            nextWaiterID += 1
            let id = nextWaiterID
            waiters[name, default: []].append(Waiter(id: id, request: request, minValid: minValid, respond: respond))
            // Bounded by the HTTP timeout: a refresh queued behind the concurrency limits may take longer.
            queue.asyncAfter(deadline: .now() + settings.requestTimeout) { [unowned self] in
                guard let index = self.waiters[name]?.firstIndex(where: { $0.id == id }) else { return }
                let waiter = self.waiters[name]!.remove(at: index)
                waiter.respond(self.router.unavailable(name: name, message: "timed out waiting for a refresh", lastError: nil, retryAfter: 1))
            }
        }
        perform(actions, for: name)
    }

    private func push(_ entry: ScheduleEntry) {
        schedule.insert(entry)
        if armedFor.map({ entry.due < $0 }) ?? true {
            arm()
        }
    }

    /// Points the one timer at the earliest live entry.
    private func arm() {
        while let first = schedule.min, !isLive(first) {
            schedule.removeMin()
        }
        guard let first = schedule.min, let timer else {
            armedFor = nil
            return
        }
        armedFor = first.due
        let delay = max(0, first.due.timeIntervalSince(clock.now()))
        timer.schedule(deadline: .now() + delay, leeway: .milliseconds(10))
    }

    private func isLive(_ entry: ScheduleEntry) -> Bool {
        guard let running = instances[entry.name], running.generation == entry.generation else { return false }
        switch entry.purpose {
        case .attempt: return running.machine.nextAttempt == entry.due
        case .expiry: return running.machine.token?.serveUntil == entry.due
        }
    }

    private func timerFired() {
        dispatchPrecondition(condition: .onQueue(queue))
        checkClock()
        armedFor = nil
        let now = clock.now()
        var expired = false
        while let first = schedule.min, first.due <= now.addingTimeInterval(0.005) {
            schedule.removeMin()
            guard isLive(first) else { continue }
            switch first.purpose {
            case .attempt:
                let actions = instances[first.name]!.machine.timerFired(now: max(now, first.due))
                perform(actions, for: first.name)
            case .expiry:
                expired = true
                removeSink(instances[first.name]?.resolved.sink)
                logger.warning("token expired", metadata: ["instance": "\(first.name)"])
            }
        }
        arm()
        // Thousands of tokens issued together expire together: one coalesced STATUS= for all of them.
        if expired { scheduleStatusUpdate() }
    }

    // MARK: - Fetching

    private func startFetch(_ name: String) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !isStopping, let running = instances[name] else { return }
        let host = running.resolved.endpointHost
        guard inFlight < settings.refresh.maxConcurrent,
            inFlightByHost[host, default: 0] < settings.refresh.perEndpointConcurrent
        else {
            if queuedForFetch.insert(name).inserted {
                waitingByHost[host, default: []].append(name)
            }
            return
        }
        inFlight += 1
        inFlightByHost[host, default: 0] += 1
        peakInFlight = max(peakInFlight, inFlight)
        peakInFlightPerHost = max(peakInFlightPerHost, inFlightByHost[host]!)
        // Rendered for this fetch (not kept between fetches); a client assertion is signed for each request, with a
        // fresh jti and the current time.
        let signed: Result<TokenRequest, FetchFailure>
        switch running.resolved.renderRequest() {
        case .success(let request):
            signed = request.signingAssertion(now: clock.now(), jti: UUID().uuidString).mapError {
                FetchFailure(kind: .permanent, code: "invalid_client_assertion", message: $0.message)
            }
        case .failure(let diagnostic):
            signed = .failure(FetchFailure(kind: .permanent, code: "invalid_request", message: diagnostic.message))
        }
        let generation = running.generation
        let endpoint = self.endpoint
        logger.debug("fetching token", metadata: ["instance": "\(name)", "endpoint": "\(host)"])
        Task { [unowned self] in
            let result: Result<TokenEndpointResponse, FetchFailure>
            switch signed {
            case .success(let request):
                result = await endpoint.send(request)
            case .failure(let failure):
                result = .failure(failure)
            }
            self.queue.async { self.fetchFinished(name, host: host, generation: generation, result: result) }
        }
    }

    private func fetchFinished(
        _ name: String,
        host: String,
        generation: Int,
        result: Result<TokenEndpointResponse, FetchFailure>
    ) {
        dispatchPrecondition(condition: .onQueue(queue))
        inFlight -= 1
        inFlightByHost[host, default: 1] -= 1
        if inFlightByHost[host] == 0 { inFlightByHost.removeValue(forKey: host) }
        startWaitingFetches(freedHost: host)
        guard !isStopping, let running = instances[name], running.generation == generation else { return }
        let now = clock.now()
        let resolved = running.resolved
        let parsed = result.flatMap { response in
            TokenResponseParser.parse(
                status: response.status,
                body: response.body,
                retryAfter: response.retryAfter,
                shape: .init(resolved.definition.connector),
                requestedScope: resolved.variable("scope")?.revealed,
                secrets: resolved.sensitiveValues,
                now: now
            )
        }.mapError { $0.redacting(resolved.sensitiveValues) }
        let actions: [InstanceStateMachine.Action]
        switch parsed {
        case .success(let token):
            metrics.refreshFinished(instance: name, result: "success")
            actions = running.machine.tokenReceived(token, now: now, using: &random)
            logger.info(
                "token refreshed",
                metadata: [
                    "instance": "\(name)",
                    "token": "\(token.fingerprint)",
                    "expires_in_s": "\(Int(token.lifetime))",
                    "next_refresh_in_s": "\(Int((running.machine.nextAttempt ?? now).timeIntervalSince(now)))",
                ]
            )
        case .failure(let failure):
            metrics.refreshFinished(instance: name, result: failure.kind.rawValue)
            actions = running.machine.fetchFailed(failure, now: now, using: &random)
            logger.warning(
                "token fetch failed",
                metadata: [
                    "instance": "\(name)",
                    "oauth.error": "\(failure.code)",
                    "kind": "\(failure.kind.rawValue)",
                    "message": "\(failure.message)",
                    "attempt": "\(running.machine.consecutiveFailures)",
                    "retry_in_s": "\(Int((running.machine.nextAttempt ?? now).timeIntervalSince(now)))",
                    "outage_budget_s": "\(Int(running.machine.outageBudget(at: now)))",
                ]
            )
        }
        unsettled.remove(name)
        perform(actions, for: name)
        scheduleStatusUpdate()
        if !isReady && unsettled.isEmpty { becomeReady(force: false) }
    }

    /// Starts held-back fetches, oldest first: the freed host's queue first, then other hosts while the overall
    /// limit allows. O(1) per started fetch, whatever the number of waiting instances.
    private func startWaitingFetches(freedHost: String) {
        drainWaiting(host: freedHost)
        guard inFlight < settings.refresh.maxConcurrent else { return }
        for host in Array(waitingByHost.keys) where host != freedHost {
            drainWaiting(host: host)
            if inFlight >= settings.refresh.maxConcurrent { break }
        }
    }

    private func drainWaiting(host: String) {
        while inFlight < settings.refresh.maxConcurrent,
            inFlightByHost[host, default: 0] < settings.refresh.perEndpointConcurrent,
            let name = waitingByHost[host]?.popFirst()
        {
            if queuedForFetch.remove(name) != nil, instances[name] != nil {
                startFetch(name)
            }
        }
        if waitingByHost[host]?.isEmpty == true { waitingByHost.removeValue(forKey: host) }
    }

    // MARK: - Status and shutdown

    private func statusLine() -> String {
        let now = clock.now()
        let entries = instances.map { name, running in
            // RunningInstance is a class: this copies a reference, not the resolved definition.
            StatusSummary.Entry(
                name: name,
                state: running.machine.state(at: now),
                errorCode: running.machine.lastFailure?.code
            )
        }
        var line = StatusSummary.line(entries, configErrors: configErrorCount)
        if let rejectedReload { line += "; reload rejected: \(rejectedReload)" }
        return line
    }

    /// Coalesces status updates: with thousands of instances finishing fetches, STATUS= is recomputed (O(n)) at
    /// most ten times a second.
    private func scheduleStatusUpdate() {
        guard !statusUpdatePending else { return }
        statusUpdatePending = true
        queue.asyncAfter(deadline: .now() + 0.1) { [unowned self] in
            self.statusUpdatePending = false
            self.updateStatus()
        }
    }

    private func updateStatus() {
        dispatchPrecondition(condition: .onQueue(queue))
        let line = statusLine()
        guard line != lastStatus else { return }
        lastStatus = line
        notifier.notify("STATUS=\(line)")
    }

    private func stop(signal signalNumber: Int32) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !isStopping else { return }
        isStopping = true
        notifier.notify("STOPPING=1\nSTATUS=stopping")
        logger.info("stopping", metadata: ["signal": "\(signalNumber == SIGTERM ? "SIGTERM" : "SIGINT")"])
        timer?.cancel()
        watchdog?.cancel()
        clockWatch?.cancel()
        extendTimer?.cancel()
        for waiter in waiters.values.joined() {
            waiter.respond(router.unavailable(name: "", message: "tokend is stopping", lastError: nil, retryAfter: 1))
        }
        waiters = [:]
        for stream in watchers.values.joined() { stream.finish() }
        watchers = [:]
        let server = self.server
        let endpoint = self.endpoint
        let ioQueue = self.ioQueue
        let logger = self.logger
        // A drain that hangs must not keep the unit in "deactivating" forever.
        queue.asyncAfter(deadline: .now() + 10) {
            logger.warning("shutdown took longer than 10 s; exiting")
            exit(0)
        }
        Task {
            await server?.close()
            await endpoint.shutdown()
            ioQueue.sync {}
            logger.info("stopped")
            exit(0)
        }
    }
}
