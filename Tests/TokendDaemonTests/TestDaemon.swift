import Foundation
import Logging
import Testing
import TokendCore
import TokendIO
import TokendTestSupport

@testable import TokendDaemon

/// Settings that make refresh times exact: refresh at half the lifetime, no jitter, quick retries.
let exactSettings = """
    startup_timeout = "30s"
    [refresh]
    ratio = 0.5
    min_lead = "0s"
    min_interval = "1s"
    jitter = 0.0
    retry_initial = "1s"
    retry_max = "8s"
    permanent_retry = "600s"
    [http]
    timeout = "20s"
    """

/// An instance file for `name` whose token endpoint is `http://HOST/NAME/token`; its secret is the file
/// `/secrets/NAME`.
func instanceFile(_ name: String, host: String = "127.0.0.1:9000", extra: String = "", variables: String = "") -> String {
    """
    token_url = "http://\(host)/\(name)/token"
    \(extra)
    [variables]
    client_id = "\(name)"
    client_secret = { file = "/secrets/\(name)" }
    \(variables)
    """
}

/// A configuration loaded from texts, as the config directory would load it; the secret file `/secrets/NAME` holds
/// `secrets[NAME]` (default `s3cret`).
func loadConfig(settings: String? = exactSettings, instances: [String: String], secrets: [String: String] = [:]) -> ConfigLoader.Loaded {
    let input = ConfigLoader.Input(
        settings: settings.map { .success(.init(path: "/cfg/tokend.toml", text: $0)) },
        instances: instances.sorted { $0.key < $1.key }.map { name, text in
            (name, .success(ConfigLoader.File(path: "/cfg/instances/\(name).toml", text: text)))
        }
    )
    return ConfigLoader.load(input) { source in
        guard case .file(let path) = source, path.hasPrefix("/secrets/") else { return .failure(.init("no such file")) }
        return .success(.init(secrets[String(path.dropFirst("/secrets/".count))] ?? "s3cret"))
    }
}

/// The daemon's executor with in-memory twins and a manual clock: no processes, sockets or sleeps.
final class TestDaemon: @unchecked Sendable {
    let clock: ManualClock
    let endpoint: ManualTokenEndpoint
    let cache: InMemoryTokenCache
    let notifier = RecordingNotifier()
    let sinks = RecordingSinkWriter()
    let config: StaticConfigSource
    /// The input files, holding what the loads read (``syncInputs(with:)``) until a test changes them.
    let inputs = InMemoryInputSource()
    let scheduler: Scheduler
    private(set) var initial: ConfigLoader.Loaded

    init(
        settings: String? = exactSettings,
        instances: [String: String],
        endpoint: ManualTokenEndpoint = ManualTokenEndpoint(),
        cache: InMemoryTokenCache = InMemoryTokenCache(),
        clock: ManualClock = ManualClock(),
        watchdogInterval: Double? = nil,
        fleet: FleetAdapter? = nil
    ) {
        initial = loadConfig(settings: settings, instances: instances)
        self.clock = clock
        self.endpoint = endpoint
        self.cache = cache
        config = StaticConfigSource(initial)
        Self.syncInputs(inputs, with: initial)
        var logger = Logger(label: "tokend-test") { _ in SwiftLogNoOpLogHandler() }
        logger.logLevel = .critical
        scheduler = Scheduler(
            settings: initial.settings ?? DaemonSettings(),
            adapters: SchedulerAdapters(
                endpoint: endpoint,
                cache: cache,
                clock: clock,
                notifier: notifier,
                sinks: sinks,
                config: config,
                fleet: fleet,
                inputs: inputs
            ),
            options: Scheduler.Options(watchdogInterval: watchdogInterval, daemonUID: 0, seed: 42, configDirectory: "/cfg"),
            logger: logger
        )
        clock.afterEachTimer { [scheduler] in
            for _ in 0..<3 { scheduler.settle() }
        }
    }

    /// Writes the values a load read from files into the input files (the files said what the load read).
    static func syncInputs(_ inputs: InMemoryInputSource, with loaded: ConfigLoader.Loaded) {
        for resolved in loaded.instances.values {
            for (variable, source) in resolved.definition.variables {
                if case .file(let path) = source, let value = resolved.values[variable] {
                    inputs.set(path, to: value.revealed, notify: false)
                }
            }
        }
    }

    /// Starts every instance of the initial config with what the cache holds for it.
    func start() {
        let cached = Dictionary(uniqueKeysWithValues: initial.instances.keys.map { ($0, cache.load(instance: $0)) })
        scheduler.queue.sync { scheduler.start(with: initial, cached: cached) }
        settle()
    }

    /// Connects the fleet (as the daemon does before it starts the instances), then starts.
    func startInFleet() async {
        await scheduler.connectFleet()
        start()
    }

    /// Waits for everything the scheduler queued (fetch results, cache and sink writes) to be done.
    func settle() {
        for _ in 0..<3 { scheduler.settle() }
    }

    /// Moves time forward, running the timers that come due, then settles.
    func advance(by seconds: Double) {
        clock.advance(by: seconds)
        settle()
    }

    /// SIGHUP with `loaded` as the new configuration; returns once it was applied (or rejected).
    func reload(_ loaded: ConfigLoader.Loaded) {
        Self.syncInputs(inputs, with: loaded)
        config.set(loaded)
        reloadAsIs()
    }

    func reloadAsIs() {
        scheduler.send(.reloadRequested)
        scheduler.queue.sync {}
        scheduler.configQueue.sync {}
        scheduler.ioQueue.sync {}
        settle()
    }

    /// The snapshot's state of `name`.
    func machine(_ name: String) -> InstanceStateMachine? { scheduler.machine(name) }

    /// The token served for `name` now, if any.
    func servedToken(_ name: String) -> String? {
        scheduler.published.instance(named: name)?.servableToken(at: clock.now())?.accessToken.revealed
    }

    /// Sends an event that answers through a reply and returns the box the answer lands in.
    func ask(_ make: (@escaping Scheduler.Reply) -> Scheduler.Event) -> Answers {
        let answers = Answers()
        scheduler.send(make { answers.append($0) })
        settle()
        return answers
    }

    /// A `GET /v1/tokens/NAME?min_valid=N` that the snapshot could not satisfy.
    func wantToken(_ name: String, minValid: Double) -> Answers {
        ask { .tokenWanted(name: name, minValid: minValid, format: .json, peer: nil, reply: $0) }
    }
}

/// The answers one request got.
final class Answers: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [APIResponse] = []

    func append(_ response: APIResponse) { lock.withLock { list.append(response) } }

    var all: [APIResponse] { lock.withLock { list } }
    var status: Int? { all.last?.status.code }
    var body: String { all.last.map { String(decoding: $0.body, as: UTF8.self) } ?? "" }

    /// The `access_token` of a 200 JSON answer, decoded with Foundation.
    var accessToken: String? {
        guard let last = all.last, last.status == 200,
            let object = try? JSONSerialization.jsonObject(with: Data(last.body)) as? [String: Any]
        else { return nil }
        return object["access_token"] as? String
    }

    func header(_ name: String) -> String? { all.last?.headers.first { $0.name == name }?.value }
}

/// A token answer from the twin endpoint, numbered by request: `t1`, `t2` and so on.
func numberedTokens(expiresIn: Int) -> ManualTokenEndpoint.Responder {
    { _, number in ManualTokenEndpoint.token("t\(number)", expiresIn: expiresIn) }
}
