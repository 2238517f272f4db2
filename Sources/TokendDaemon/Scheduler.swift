import DequeModule
import Dispatch
import Foundation
import Logging
import Synchronization
import TokendCore
import TokendIO

/// The adapters the scheduler acts through: the real ones in ``Daemon``, in-memory twins in tests.
public struct SchedulerAdapters: Sendable {
    public var endpoint: any TokenEndpoint
    public var cache: any TokenCache
    public var clock: any DaemonClock
    public var notifier: any ServiceNotifier
    public var sinks: any TokenSinkWriter
    public var config: any ConfigSource
    /// Hands pages that were freed back to the system (`malloc_trim`); the one place memory is trimmed.
    public var trimMemory: @Sendable () -> Void
    /// A group name or number to its id (`admin_group`).
    public var resolveGroup: @Sendable (String) -> UInt32?
    /// The fleet's store, key and host name when `[fleet]` is set (SPEC §14).
    public var fleet: FleetAdapter?
    /// Reads and watches the files of `{ file = … }` and `{ credential = … }` values (SPEC §11).
    public var inputs: any InputSource

    public init(
        endpoint: any TokenEndpoint,
        cache: any TokenCache,
        clock: any DaemonClock,
        notifier: any ServiceNotifier,
        sinks: any TokenSinkWriter,
        config: any ConfigSource,
        trimMemory: @escaping @Sendable () -> Void = {},
        resolveGroup: @escaping @Sendable (String) -> UInt32? = { UInt32($0) },
        fleet: FleetAdapter? = nil,
        inputs: any InputSource = InputFiles(credentialsDirectory: nil)
    ) {
        self.endpoint = endpoint
        self.cache = cache
        self.clock = clock
        self.notifier = notifier
        self.sinks = sinks
        self.config = config
        self.trimMemory = trimMemory
        self.resolveGroup = resolveGroup
        self.fleet = fleet
        self.inputs = inputs
    }
}

/// The executor: one serial queue owns every instance's state.
///
/// Every input arrives as an ``Event``; the pure parts (``InstanceStateMachine``, ``WakeUpSchedule``, ``FetchLimiter``,
/// ``ReloadPlan``, ``Readiness``, the waiter and watcher books) decide; this class performs their actions through the
/// ``SchedulerAdapters`` it was given.
///
/// Threading: every `var` is touched only on `queue`. Token requests complete on any thread and come back as
/// events; cache and sink files are written on `ioQueue`; config files are read on `configQueue`; socket requests
/// read the published snapshot on NIO's event loops.
public final class Scheduler: @unchecked Sendable {
    /// How one waiting socket request is answered.
    public typealias Reply = @Sendable (APIResponse) -> Void

    /// Everything that can happen to the daemon.
    public enum Event: Sendable {
        /// The schedule's timer fired.
        case timerFired
        /// A token request finished.
        case fetchFinished(name: String, host: String, generation: Int, result: Result<TokenEndpointResponse, FetchFailure>)
        /// A client wants a token valid for at least `minValid` s (0: any, during start-up) that the snapshot lacks.
        case tokenWanted(name: String, minValid: Double, format: TokenFormat, peer: PeerCredentials?, reply: Reply)
        /// An admin asked for a refresh now.
        case refreshWanted(name: String, reply: Reply)
        /// A client says the token with this fingerprint was refused (401).
        case invalidationWanted(name: String, fingerprint: String, reply: Reply)
        /// A client opens a watch stream.
        case watchWanted(name: String, peer: PeerCredentials?, open: @Sendable () -> any TokenEventStream)
        /// SIGHUP.
        case reloadRequested
        /// The configuration (and the cache files of new instances) was read for a reload.
        case reloadLoaded(Result<ConfigLoader.Loaded, ConfigDirectory.Unreadable>, cached: [String: CacheLoadOutcome])
        /// SIGTERM or SIGINT.
        case stopRequested(signal: String)
        /// Time to compare the wall clock with the boot clock.
        case clockCheckDue
        /// Time for a watchdog ping.
        case watchdogDue
        /// Time to ask for more start-up time.
        case startupExtensionDue
        /// `startup_timeout` ran out.
        case startupTimedOut
        /// Time to recompute `STATUS=`.
        case statusDue
        /// A waiting request's time ran out.
        case waiterTimedOut(name: String, id: Int)
        /// A batch of cache writes is done: its tokens may be served.
        case tokensStored([StoredToken])
        /// The fleet's store answered, or another host wrote a row.
        case fleet(FleetEvent)
        /// The file at this path, an input of some instance, may have changed.
        case inputChanged(path: String)
        /// Time to read the input files the watch cannot watch.
        case inputPollDue
    }

    /// A token whose cache write is done: its instance, the instance's generation when the write was queued and the
    /// token's fingerprint.
    public struct StoredToken: Sendable, Hashable {
        public var instance: String
        public var generation: Int
        public var fingerprint: String
    }

    /// What the daemon knows of its environment at start.
    public struct Options: Sendable {
        /// Seconds between watchdog pings; nil when the watchdog is off.
        public var watchdogInterval: Double?
        /// The daemon's own uid (an admin).
        public var daemonUID: UInt32
        /// Seed for the refresh jitter; nil for a random one.
        public var seed: UInt64?
        /// Shows the config directory in log lines.
        public var configDirectory: String

        public init(watchdogInterval: Double? = nil, daemonUID: UInt32, seed: UInt64? = nil, configDirectory: String = "") {
            self.watchdogInterval = watchdogInterval
            self.daemonUID = daemonUID
            self.seed = seed
            self.configDirectory = configDirectory
        }
    }

    /// One running instance: its definition and its state machine, in the immutable box that the socket's snapshot
    /// shares once published (one copy of each instance's state).
    ///
    /// A change makes a new box.
    final class RunningInstance {
        var resolved: ResolvedInstance
        private(set) var state: PublishedMachine
        let generation: Int
        /// The changing input values (files, credentials, other instances' tokens) the last fetch was started with.
        var attemptedWith: VariableMap<Secret>?
        /// The changing input values the current token was obtained with (nil when not known: a cached token).
        var usedInputs: VariableMap<Secret>?
        /// With `bound_to_input`: when the input tokens of the fetch in flight stop being servable.
        var boundUntil: Date?
        /// Variables whose file cannot be read now, with why (`input_unreadable`; the last good value is used).
        var unreadable: [String: String] = [:]

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

    public let queue = DispatchQueue(label: "tokend.scheduler")
    let ioQueue = DispatchQueue(label: "tokend.io")
    let configQueue = DispatchQueue(label: "tokend.config")
    let adapters: SchedulerAdapters
    let options: Options
    let logger: Logger
    let published: PublishedInstances
    let router = APIRouter()
    let metrics: TokendMetrics
    /// Created on first use (it reports back to the scheduler).
    lazy var cacheWriter = CacheWriter(
        cache: adapters.cache,
        queue: ioQueue,
        logger: logger,
        trimMemory: adapters.trimMemory,
        durable: { [weak self] written in self?.send(.tokensStored(written)) }
    )

    /// Refused socket requests, counted per caller (written on NIO's event loops, summed up on the clock check).
    let refusals = Mutex(RefusalLog())
    /// Refused credentials.sock connections (SPEC §10), all under uid 0: the service manager makes them all.
    let credentialRefusals = Mutex(RefusalLog())

    var settings: DaemonSettings
    var instances: [String: RunningInstance] = [:]
    var schedule = WakeUpSchedule()
    var limiter: FetchLimiter
    var readiness = Readiness()
    var waiters = WaiterBook<Reply>()
    var watchers = WatcherBook<any TokenEventStream>()
    var random: SplitMix64
    var lastGeneration = 0
    var configErrorCount = 0
    /// The first file with a config error of the last load, relative to the config directory.
    var firstBrokenFile: String?
    var rejectedReload: String?
    var lastStatus = ""
    var isStopping = false
    var hasStopped = false
    /// How long each start-up step took (milliseconds, in order), logged with READY=1.
    var startupSteps: [(step: String, milliseconds: Int)] = []
    /// Wall-clock and boot-time readings at the last clock check: a difference in their progress is a clock step.
    var lastClockReading: (wall: Date, boot: Double)?

    /// Who takes whose token (`{ instance = … }`), among the running instances.
    var dependencies = DependencyGraph()
    /// Input file path to the instances that read it.
    var inputPaths: [String: Set<String>] = [:]
    /// Input files the watch cannot watch, read every ``inputPollInterval`` instead.
    var unwatchedInputs: Set<String> = []
    var inputPollTimer: (any DaemonTimer)?

    var fleetHealth = FleetHealth.connecting
    var fleetMembers: [String: FleetMember] = [:]
    /// Shared identity to instance name, for the other hosts' notifications.
    var fleetNames: [[UInt8]: String] = [:]
    var fleetReconnectTimer: (any DaemonTimer)?
    /// Whether this host's listener for the other hosts' writes is running.
    var fleetListening = false
    /// Store calls running, and those waiting for one of the places (``fleetConcurrency``).
    var fleetActive = 0
    var fleetWaiting = Deque<@Sendable () async -> FleetEvent>()
    /// Row reads asked for while handling the current event, sent together.
    var fleetReads: [FleetReadRequest] = []
    /// Store calls not yet answered (tests wait for them to settle).
    let fleetInFlight = Atomic<Int>(0)
    /// Store calls started so far (tests see whether handling an answer started another).
    let fleetStarted = Atomic<Int>(0)
    let fleetExecutor = DispatchTaskExecutor(label: "tokend.fleet")

    var timer: (any DaemonTimer)?
    var statusTimer: (any DaemonTimer)?
    /// The watchdog, the clock watch, the start-up timeout (and, while stopping, the drain's deadline).
    var repeatingTimers: [any DaemonTimer] = []
    var extensionTimer: (any DaemonTimer)?
    var waiterTimers: [Int: any DaemonTimer] = [:]

    /// SIGHUP, SIGTERM and SIGINT, kept for as long as the daemon runs.
    var signalSources: SignalSources?
    /// Called when the daemon stopped, with its exit status.
    var onStopped: @Sendable (Int32) -> Void = { _ in }
    /// Closes the socket server first when the daemon stops.
    var closeServer: @Sendable () async -> Void = {}
    /// Hands the socket the connection limits of reloaded settings.
    var updateSocketLimits: @Sendable (DaemonSettings) -> Void = { _ in }

    public init(
        settings: DaemonSettings,
        adapters: SchedulerAdapters,
        options: Options,
        logger: Logger
    ) {
        self.settings = settings
        self.adapters = adapters
        self.options = options
        self.logger = logger
        self.published = PublishedInstances()
        self.metrics = TokendMetrics()
        self.limiter = FetchLimiter(
            maxConcurrent: settings.refresh.maxConcurrent,
            perEndpointConcurrent: settings.refresh.perEndpointConcurrent
        )
        self.random = options.seed.map(SplitMix64.init(seed:)) ?? SplitMix64()
    }

    /// Queues `event` for the scheduler queue.
    public func send(_ event: Event) {
        queue.async { self.handle(event) }
    }

    /// Handles one event on the scheduler queue.
    public func handle(_ event: Event) {
        dispatchPrecondition(condition: .onQueue(queue))
        switch event {
        case .timerFired: timerFired()
        case .fetchFinished(let name, let host, let generation, let result):
            fetchFinished(name, host: host, generation: generation, result: result)
        case .tokenWanted(let name, let minValid, let format, let peer, let reply):
            tokenWanted(name, minValid: minValid, format: format, peer: peer, reply: reply)
        case .refreshWanted(let name, let reply): refreshWanted(name, reply: reply)
        case .invalidationWanted(let name, let fingerprint, let reply):
            invalidationWanted(name, fingerprint: fingerprint, reply: reply)
        case .watchWanted(let name, let peer, let open): watchWanted(name, peer: peer, open: open)
        case .reloadRequested: reloadRequested()
        case .reloadLoaded(let outcome, let cached): reloadLoaded(outcome, cached: cached)
        case .stopRequested(let signal): stopRequested(signal: signal)
        case .clockCheckDue:
            checkClock()
            logRefusalSummaries()
        case .watchdogDue: if !isStopping { adapters.notifier.notify(.watchdog) }
        case .startupExtensionDue: if !readiness.isReady { adapters.notifier.notify(.extendTimeout(microseconds: 15_000_000)) }
        case .startupTimedOut: becomeReady(startupTimedOut: true)
        case .statusDue:
            statusTimer = nil
            updateStatus()
        case .waiterTimedOut(let name, let id): waiterTimedOut(name, id: id)
        case .tokensStored(let written): tokensStored(written)
        case .fleet(let event): handleFleet(event)
        case .inputChanged(let path): inputFileChanged(path)
        case .inputPollDue: for path in unwatchedInputs.sorted() { inputFileChanged(path) }
        }
    }

    /// A timer of the clock adapter that sends `event`.
    func timer(sending event: Event) -> any DaemonTimer {
        adapters.clock.makeTimer(on: queue) { [unowned self] in self.handle(event) }
    }

    // MARK: - Start

    /// Starts the schedule and every instance of the start-up config, with the cache records read for them.
    public func start(with loaded: ConfigLoader.Loaded, cached: [String: CacheLoadOutcome]) {
        dispatchPrecondition(condition: .onQueue(queue))
        timer = timer(sending: .timerFired)
        if let interval = options.watchdogInterval {
            let watchdog = timer(sending: .watchdogDue)
            watchdog.schedule(after: 0, repeating: interval, leeway: 0.05)
            repeatingTimers.append(watchdog)
            logger.debug("watchdog enabled", metadata: ["interval_s": "\(interval)"])
        }
        // Only the clock: state changes that time brings (expiry) have wake-ups of their own, so an idle daemon does
        // O(1) work here whatever the number of instances.
        lastClockReading = (adapters.clock.now(), adapters.clock.bootSeconds())
        let clockWatch = timer(sending: .clockCheckDue)
        clockWatch.schedule(after: 10, repeating: 10, leeway: 1)
        repeatingTimers.append(clockWatch)
        let applyStart = adapters.clock.monotonicMicroseconds()
        apply(loaded, cached: cached)
        startupSteps.append(("apply", Int((adapters.clock.monotonicMicroseconds() - applyStart) / 1000)))
        published.isLoaded = true
        repeatingTimers.append(
            adapters.clock.after(settings.startupTimeout, on: queue) { [unowned self] in
                self.handle(.startupTimedOut)
            }
        )
        becomeReady(startupTimedOut: false)
        if !readiness.isReady {
            // While the first round runs, systemd is asked for more start-up time, so that a long first round never
            // hits TimeoutStartSec= before startup_timeout sends READY=1 anyway.
            let extensionTimer = timer(sending: .startupExtensionDue)
            extensionTimer.schedule(after: 0, repeating: 5, leeway: 0.1)
            self.extensionTimer = extensionTimer
        }
    }

    // MARK: - Acting on the state machines

    /// Performs an instance's actions, then publishes its new state.
    func perform(_ actions: [InstanceStateMachine.Action], for name: String) {
        guard let running = instances[name] else { return }
        for action in actions {
            switch action {
            case .fetch:
                if let missing = missingInput(of: running, now: adapters.clock.now()) {
                    inputMissing(name, missing)
                } else if fleetShares(name) {
                    fleetFetch(name)
                } else {
                    startFetch(name)
                }
            case .scheduleRefresh(let due):
                add(WakeUpSchedule.Entry(due: due, name: name, generation: running.generation, purpose: .attempt))
            case .store(let token):
                let record = CacheRecord(instance: name, token: token, fingerprint: running.resolved.fingerprint)
                cacheWriter.store(record, generation: running.generation)
            case .deliver(let token):
                running.usedInputs = running.attemptedWith
                writeSink(name, token: token, to: running.resolved.sink)
                notifyWatchers(name, token: token)
                addExpiry(of: running)
            case .serveWaiters(let token):
                serveWaiters(name, token: token)
            case .rejectWaiters(let failure):
                // Asking again helps once the next attempt is due.
                let now = adapters.clock.now()
                let retryAfter = running.machine.nextAttempt.map { Int($0.timeIntervalSince(now).rounded(.up)) } ?? 1
                for waiter in waiters.take(name) {
                    reply(
                        waiter,
                        router.unavailable(
                            name: name,
                            message: "refresh failed: \(failure.message)",
                            lastError: failure.code,
                            retryAfter: retryAfter
                        )
                    )
                }
            }
        }
        published.publish(name, running.state)
        if actions.contains(where: { if case .deliver = $0 { true } else { false } }) {
            // An input that changed while the fetch was in flight.
            inputsMayHaveChanged(name)
        }
        if dependencies.dependents[name] != nil { inputStateChanged(name) }
    }

    // MARK: - The schedule

    func add(_ entry: WakeUpSchedule.Entry) {
        if schedule.add(entry) { arm() }
    }

    /// A wake-up when the instance's token stops being servable.
    func addExpiry(of running: RunningInstance) {
        guard let token = running.machine.token else { return }
        let name = running.resolved.definition.name
        add(WakeUpSchedule.Entry(due: token.serveUntil, name: name, generation: running.generation, purpose: .expiry))
    }

    /// Points the one timer at the earliest live wake-up.
    func arm() {
        guard let due = schedule.arm(isLive: isLive) else { return }
        timer?.schedule(after: due.timeIntervalSince(adapters.clock.now()))
    }

    func isLive(_ entry: WakeUpSchedule.Entry) -> Bool {
        guard let running = instances[entry.name], running.generation == entry.generation else { return false }
        switch entry.purpose {
        case .attempt: return running.machine.nextAttempt == entry.due
        case .expiry: return running.machine.token?.serveUntil == entry.due
        }
    }

    func timerFired() {
        checkClock()
        schedule.fired()
        let now = adapters.clock.now()
        var expired = false
        while let entry = schedule.takeDue(at: now, isLive: isLive), let running = instances[entry.name] {
            switch entry.purpose {
            case .attempt:
                perform(running.machine.timerFired(now: max(now, entry.due)), for: entry.name)
            case .expiry:
                expired = true
                removeSink(running.resolved.sink)
                logger.warning("token expired", metadata: ["instance": "\(entry.name)"])
                if dependencies.dependents[entry.name] != nil { inputStateChanged(entry.name) }
            }
        }
        arm()
        // Tokens issued together expire together: one coalesced STATUS= for all of them.
        if expired { scheduleStatusUpdate() }
    }

    // MARK: - Sinks

    /// Writes the token to the instance's sink file, if it has one (on the I/O queue).
    func writeSink(_ name: String, token: IssuedToken, to target: SinkTarget?) {
        guard let target else { return }
        let (sinks, logger) = (adapters.sinks, logger)
        ioQueue.async {
            do {
                try sinks.write(token.accessToken, to: target)
            } catch {
                logger.error("sink write failed", metadata: ["instance": "\(name)", "error": "\(error)"])
            }
        }
    }

    /// Removes the instance's sink file, if it has one (on the I/O queue).
    func removeSink(_ target: SinkTarget?) {
        guard let target else { return }
        let (sinks, logger) = (adapters.sinks, logger)
        ioQueue.async {
            do {
                try sinks.remove(target)
            } catch {
                logger.error("sink removal failed", metadata: ["sink": "\(target.path)", "error": "\(error)"])
            }
        }
    }

    // MARK: - For tests

    /// Waits until the scheduler queue and then the I/O queue have done what was queued before, twice: a cache
    /// write reports back to the scheduler queue, which then serves the token and writes its sink.
    public func settle() {
        for _ in 0..<2 {
            queue.sync {}
            ioQueue.sync {}
        }
        // Fleet store calls run in tasks: wait for their answers, and what those answers start. A call's answer is
        // queued before it stops counting; done when none counts and handling the queue started no other.
        while true {
            let started = fleetStarted.load(ordering: .acquiring)
            let busy = fleetInFlight.load(ordering: .acquiring) > 0
            if busy { usleep(200) }
            queue.sync {}
            ioQueue.sync {}
            queue.sync {}
            if !busy && fleetInFlight.load(ordering: .acquiring) == 0 && fleetStarted.load(ordering: .acquiring) == started { break }
        }
    }

    /// The fetch limiter's peaks (requests in flight at once, overall and to one host).
    public var peakFetches: (overall: Int, perHost: Int) {
        queue.sync { (limiter.peakInFlight, limiter.peakInFlightPerHost) }
    }

    /// An instance's state machine, read on the queue.
    public func machine(_ name: String) -> InstanceStateMachine? {
        queue.sync { instances[name]?.machine }
    }
}
