import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Runs the real `tokend` binary in a temporary config/state/socket directory against a ``LocalTokenServer``,
/// with a datagram socket bound as `NOTIFY_SOCKET`.
///
/// Tests get one through ``with(lifetime:settings:_:)`` or ``withRunning(_:lifetime:settings:_:)``, which always
/// await ``tearDown()`` (also when the test throws): the daemon is stopped, what it left is audited for leaked
/// secrets and tokens, every endpoint is stopped and the temporary directory removed.
final class DaemonHarness: @unchecked Sendable {
    let root: String
    let configDir: String
    let stateDir: String
    let socketPath: String
    let logPath: String
    let endpoint: LocalTokenServer
    private(set) var notify: NotifySocketListener
    private(set) var process: Process?
    /// A daemon started by ``startDetached(wrappedIn:)``.
    private var detachedPID: pid_t?
    private let client = HTTPClient(eventLoopGroupProvider: .singleton)
    /// Set by the notify listener when READY=1 arrived: whether the API socket accepted a connection then.
    private let readyProbe = ReadyProbe()
    /// The secrets this harness configured and the endpoints whose tokens it handed out, for the leak audit.
    private let audited = Audited()
    /// Whether a daemon was ever started (then the teardown audits what it left).
    private var everStarted = false
    /// Leak findings already recorded as issues (the audit runs at every stop and again at teardown).
    private var recordedLeaks: Set<String> = []
    /// Work the test registered for the teardown (a PKI to remove, a proxy to stop), run in order.
    private var teardownWork: [@Sendable () async -> Void] = []

    final class Audited: @unchecked Sendable {
        private let lock = NSLock()
        private var secretValues: [String] = []
        private var extraEndpoints: [LocalTokenServer] = []

        func add(secret: String) {
            lock.withLock { secretValues.append(secret) }
        }

        func add(endpoint: LocalTokenServer) {
            lock.withLock { extraEndpoints.append(endpoint) }
        }

        var secrets: [String] { lock.withLock { secretValues } }
        var endpoints: [LocalTokenServer] { lock.withLock { extraEndpoints } }
    }

    final class ReadyProbe: @unchecked Sendable {
        private let lock = NSLock()
        private var results: [Bool] = []

        func record(_ accepted: Bool) {
            lock.withLock { results.append(accepted) }
        }

        var all: [Bool] { lock.withLock { results } }
    }

    /// Settings that make short-lived tokens practical: refresh at 75 % with no minimum lead, quick retries.
    static let fastSettings = """
        [refresh]
        ratio = 0.75
        min_lead = "0s"
        min_interval = "1s"
        jitter = 0.1
        retry_initial = "200ms"
        retry_max = "1s"
        """

    init(lifetime: Int = 3600, settings: String = DaemonHarness.fastSettings) async throws {
        let template = "/tmp/tokend-e2e-XXXXXX"
        var buffer = Array(template.utf8CString)
        guard let made = mkdtemp(&buffer) else { throw POSIXError(.EIO) }
        root = String(cString: made)
        configDir = root + "/config"
        stateDir = root + "/state"
        socketPath = root + "/tokend.sock"
        logPath = root + "/tokend.log"
        try FileManager.default.createDirectory(atPath: configDir + "/instances", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/secrets", withIntermediateDirectories: true)
        try settings.write(toFile: configDir + "/tokend.toml", atomically: true, encoding: .utf8)
        endpoint = LocalTokenServer(lifetime: lifetime)
        try await endpoint.start(port: 0)
        let probe = readyProbe
        let socketPath = self.socketPath
        notify = try NotifySocketListener(path: root + "/notify.sock") { message in
            if message.split(separator: "\n").contains("READY=1") {
                probe.record(unixSocketAcceptsConnections(at: socketPath))
            }
        }
    }

    /// Runs `body` with a new harness and awaits ``tearDown()`` after it, whether it returns or throws.
    static func with(
        lifetime: Int = 3600,
        settings: String = fastSettings,
        _ body: (DaemonHarness) async throws -> Void
    ) async throws {
        let harness = try await DaemonHarness(lifetime: lifetime, settings: settings)
        do {
            try await body(harness)
        } catch {
            await harness.tearDown()
            throw error
        }
        await harness.tearDown()
    }

    /// ``with(lifetime:settings:_:)`` with a daemon that runs these instances (inline form, default values) and
    /// has sent READY=1 before `body` runs.
    static func withRunning(
        _ names: String...,
        lifetime: Int = 3600,
        settings: String = fastSettings,
        _ body: (DaemonHarness) async throws -> Void
    ) async throws {
        try await with(lifetime: lifetime, settings: settings) { harness in
            for name in names { try harness.writeInstance(name) }
            try harness.start()
            try await harness.waitUntilReady()
            try await body(harness)
        }
    }

    /// Writes `instances/<name>.toml` in the inline form, with the secret in a file (and with `caFile` as the
    /// instance's `ca_file`).
    func writeInstance(
        _ name: String,
        clientID: String? = nil,
        secret: String = "s3cret-value",
        auth: String = "client_secret_basic",
        scope: String = "read",
        tokenURL: String? = nil,
        caFile: String? = nil,
        extra: String = ""
    ) throws {
        let secretPath = try writeSecret(name, secret)
        let text = """
            token_url   = "\(tokenURL ?? endpoint.tokenURL)"
            client_auth = "\(auth)"
            token_key   = "access_token"
            expires_in_key = "expires_in"\(caFile.map { "\nca_file = \"\($0)\"" } ?? "")

            [variables]
            client_id     = "\(clientID ?? name)"
            client_secret = { file = "\(secretPath)" }
            scope         = "\(scope)"

            \(extra)
            """
        try writeRaw(name, text)
    }

    /// Writes `count` minimal instances `i0`, `i1`, … sharing one secret file; returns their names.
    @discardableResult
    func writeNumberedInstances(_ count: Int) throws -> [String] {
        let secret = try writeSecret("shared", "s3cret-shared")
        return try (0..<count).map { index in
            try writeRaw(
                "i\(index)",
                "token_url = \"\(endpoint.tokenURL)\"\n[variables]\nclient_id = \"i\(index)\"\nclient_secret = { file = \"\(secret)\" }\n"
            )
            return "i\(index)"
        }
    }

    /// `clients` tasks that read raw tokens in a loop until cancelled, client `n` starting at `names[n % count]`
    /// and going round; each returns how many answers were the `expected` token and a line for every other one.
    /// (An answer cut short by the cancellation is not counted as the daemon's error.)
    func readContinuously(_ names: [String], expected: [String: String], clients: Int) -> [Task<(served: Int, errors: [String]), Never>] {
        (0..<clients).map { client in
            Task {
                var served = 0
                var errors: [String] = []
                var next = client
                while !Task.isCancelled {
                    let name = names[next % names.count]
                    next += 1
                    do {
                        let answer = try await self.get("/v1/tokens/\(name)?format=raw")
                        if Task.isCancelled { break }
                        if answer.status == 200 && answer.body == expected[name] {
                            served += 1
                        } else {
                            errors.append("\(name): \(answer.status) \(answer.body.prefix(100))")
                        }
                    } catch {
                        if !Task.isCancelled { errors.append("\(name): \(error)") }
                    }
                }
                return (served, errors)
            }
        }
    }

    /// Cancels the readers and adds up what they saw.
    static func finish(_ readers: [Task<(served: Int, errors: [String]), Never>]) async -> (served: Int, errors: [String]) {
        for reader in readers { reader.cancel() }
        var total = (served: 0, errors: [String]())
        for reader in readers {
            let result = await reader.value
            total.served += result.served
            total.errors += result.errors
        }
        return total
    }

    func writeRaw(_ name: String, _ text: String) throws {
        try text.write(toFile: "\(configDir)/instances/\(name).toml", atomically: true, encoding: .utf8)
    }

    func writeConnector(_ name: String, _ text: String) throws {
        try FileManager.default.createDirectory(atPath: configDir + "/connectors", withIntermediateDirectories: true)
        try text.write(toFile: "\(configDir)/connectors/\(name).toml", atomically: true, encoding: .utf8)
    }

    /// Writes a secret file, mode 0600 unless said otherwise.
    func writeSecret(_ name: String, _ secret: String, mode: Int = 0o600) throws -> String {
        let path = "\(root)/secrets/\(name)"
        audited.add(secret: secret)
        try secret.write(toFile: path, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        return path
    }

    /// Runs `tokend <arguments>` to completion; returns its exit status, stdout and stderr.
    func runCLI(_ arguments: [String], viaEnv: Bool = false) throws -> (status: Int32, stdout: String, stderr: String) {
        let result = try runCommand(viaEnv ? arguments : [try Self.binaryPath()] + arguments)
        return (result.status, result.stdout, result.stderr)
    }

    /// Lets other users reach the socket: the temporary directory 0755, the socket 0666 (access rules decide).
    func openUpForOtherUsers() throws {
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root)
        let settings = try String(contentsOfFile: configDir + "/tokend.toml", encoding: .utf8)
        try ("socket_mode = \"0666\"\n" + settings).write(toFile: configDir + "/tokend.toml", atomically: true, encoding: .utf8)
    }

    /// `curl --unix-socket` against the daemon, optionally run through `prefix` (setpriv as another user, say).
    func curl(_ arguments: [String], as prefix: [String] = [], stdin: String? = nil) throws -> (status: Int, body: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = prefix + ["curl", "-s", "--max-time", "10", "--unix-socket", socketPath, "-w", "\n%{http_code}"] + arguments
        let out = Pipe()
        process.standardOutput = out
        let input = Pipe()
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        var text = String(decoding: data, as: UTF8.self)
        guard let newline = text.lastIndex(of: "\n") else { return (0, text) }
        let code = Int(text[text.index(after: newline)...]) ?? 0
        text = String(text[..<newline])
        return (code, text)
    }

    /// ``curl(_:as:stdin:)`` on a Dispatch thread: a test that runs many does not hold one of the cooperative pool's
    /// few threads (two on two cores) while each runs, which would starve every other suite's async work.
    func curlAsync(_ arguments: [String], as prefix: [String] = []) async throws -> (status: Int, body: String) {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try self.curl(arguments, as: prefix) })
            }
        }
    }

    /// Writes raw bytes to the socket and returns what comes back until the daemon closes (or 5 s pass).
    func rawExchange(_ text: String) throws -> String {
        try exchangeOnUnixSocket(socketPath, text)
    }

    /// The diagnostics the daemon logged as config errors, in order (unquoted from the log's `error="…"`).
    var loggedConfigErrors: [String] {
        log.split(separator: "\n").compactMap { line -> String? in
            guard line.contains("config error"), let start = line.range(of: "error=\"") else { return nil }
            var value = String(line[start.upperBound...])
            if value.hasSuffix("\"") { value.removeLast() }
            return value.replacingOccurrences(of: "\\\"", with: "\"")
        }
    }

    func removeInstance(_ name: String) throws {
        try FileManager.default.removeItem(atPath: "\(configDir)/instances/\(name).toml")
    }

    /// Starts the binary; `watchdogMicroseconds` sets `WATCHDOG_USEC`; `wrapper` runs it through another command,
    /// such as `systemd-socket-activate`.
    ///
    /// `socket` replaces the harness's socket path; `environment` adds to (or overrides) the inherited environment,
    /// e.g. `HTTPS_PROXY` or `JOURNAL_STREAM`. With `passConfigDir` false the daemon gets no `--config-dir` and finds
    /// its config directory from `environment` (`TOKEND_CONFIG_DIR`, `CONFIGURATION_DIRECTORY`).
    func start(
        watchdogMicroseconds: Int? = nil,
        wrappedIn wrapper: [String] = [],
        socket: String? = nil,
        passConfigDir: Bool = true,
        environment extra: [String: String] = [:]
    ) throws {
        let process = Process()
        let arguments = daemonArguments(socket: socket, passConfigDir: passConfigDir)
        if wrapper.isEmpty {
            process.executableURL = URL(fileURLWithPath: try Self.binaryPath())
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = wrapper + [try Self.binaryPath()] + arguments
        }
        process.environment = daemonEnvironment(watchdogMicroseconds: watchdogMicroseconds, extra: extra)
        let log = try openLog()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        self.process = process
        everStarted = true
    }

    /// Starts the binary through `wrapper` as a plain child (`posix_spawnp`), not a Foundation `Process`.
    ///
    /// For a wrapper such as `systemd-socket-activate`, which closes every descriptor it does not pass on: Foundation takes
    /// the close of its status descriptor for the child's exit and blocks its one monitoring thread in `waitpid`
    /// until the wrapper really ends, and every other `Process` of the test run goes unreaped meanwhile. Stopped by
    /// ``tearDown()``.
    func startDetached(wrappedIn wrapper: [String]) throws {
        let argv = wrapper + [try Self.binaryPath()] + daemonArguments(socket: nil, passConfigDir: true)
        let environment = daemonEnvironment(watchdogMicroseconds: nil, extra: [:]).map { "\($0.key)=\($0.value)" }
        let log = try openLog()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, log.fileDescriptor, 1)
        posix_spawn_file_actions_adddup2(&actions, log.fileDescriptor, 2)
        let cArguments = argv.map { strdup($0) } + [nil]
        let cEnvironment = environment.map { strdup($0) } + [nil]
        defer { for pointer in cArguments + cEnvironment { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawnp(&pid, argv[0], &actions, nil, cArguments, cEnvironment)
        try? log.close()
        guard status == 0 else { throw POSIXError(POSIXErrorCode(rawValue: status) ?? .EIO) }
        detachedPID = pid
        everStarted = true
    }

    private func daemonArguments(socket: String?, passConfigDir: Bool) -> [String] {
        ["run"] + (passConfigDir ? ["--config-dir", configDir] : []) + ["--state-dir", stateDir, "--socket", socket ?? socketPath]
    }

    private func daemonEnvironment(watchdogMicroseconds: Int?, extra: [String: String]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        for key in Self.inheritedVariablesRemoved {
            environment.removeValue(forKey: key)
        }
        environment["NOTIFY_SOCKET"] = notify.path
        environment["SWIFT_BACKTRACE"] = "enable=no"
        if let watchdogMicroseconds { environment["WATCHDOG_USEC"] = String(watchdogMicroseconds) }
        environment.merge(extra) { _, new in new }
        return environment
    }

    /// The daemon's log file, opened for appending.
    private func openLog() throws -> FileHandle {
        if !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        return log
    }

    /// What a test run under systemd or with a proxy set would otherwise hand the daemon.
    static let inheritedVariablesRemoved = [
        "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
        "TOKEND_CONFIG_DIR", "TOKEND_STATE_DIR", "TOKEND_SOCKET", "CONFIGURATION_DIRECTORY", "STATE_DIRECTORY",
        "RUNTIME_DIRECTORY", "CREDENTIALS_DIRECTORY", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy",
    ]

    /// Waits for `READY=1` (counting from the `after`-th one).
    func waitUntilReady(count: Int = 1, timeout: Double = 20) async throws {
        try await eventually("READY=1 number \(count)", timeout: timeout) {
            self.notify.assignments.filter { $0 == "READY=1" }.count >= count
        }
    }

    /// Whether the API socket accepted a connection at the moment each READY=1 arrived.
    var socketAcceptedAtReady: [Bool] { readyProbe.all }

    func signal(_ number: Int32) {
        guard let process else { return }
        kill(process.processIdentifier, number)
    }

    /// Sends SIGTERM and returns the exit status; then audits what the daemon left for leaked secrets and tokens
    /// (every test that stops its daemon this way takes part in the audit).
    @discardableResult
    func stop(timeout: Double = 15) async throws -> Int32 {
        guard let process else { return -1 }
        kill(process.processIdentifier, SIGTERM)
        try await eventually("tokend exits", timeout: timeout) { !process.isRunning }
        self.process = nil
        recordLeaks()
        return process.terminationStatus
    }

    /// Records every leak the audit finds that was not recorded before.
    private func recordLeaks() {
        for leak in leaks() where recordedLeaks.insert(leak).inserted {
            Issue.record(Comment(rawValue: leak))
        }
    }

    /// A secret or token to look for besides the harness's own (`writeSecret`, its endpoint's tokens).
    func audit(secret: String) {
        audited.add(secret: secret)
    }

    /// Another endpoint of the test: the audit looks for its tokens too, and the teardown stops it.
    func adopt(_ endpoint: LocalTokenServer) {
        audited.add(endpoint: endpoint)
    }

    /// Work for the teardown, after the daemon has stopped (a PKI to remove, a proxy to stop).
    func onTearDown(_ work: @escaping @Sendable () async -> Void) {
        teardownWork.append(work)
    }

    /// The configured secrets of at least 6 characters, their form-encoded spellings, and the first half of each
    /// one of 16 or more (a secret clipped in the middle of a message is a leak too).
    var auditedSecrets: [String] {
        let whole = audited.secrets.filter { $0.utf8.count >= 6 }.flatMap { [$0, WireDecoding.formEncode($0)] }
        return Array(Set(whole + whole.filter { $0.count >= 16 }.map { String($0.prefix($0.count / 2)) }))
    }

    /// Every token the endpoints issued.
    var auditedTokens: [String] {
        ([endpoint] + audited.endpoints).flatMap(\.issuedTokens)
    }

    /// Where the daemon's log holds a configured secret or an issued token, or its state directory a secret
    /// (the cache holds tokens by design; files a test moved aside as `.corrupt` are the test's own).
    func leaks(in extra: [(what: String, text: String)] = []) -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: stateDir)) ?? []
        let state = files.filter { !$0.hasSuffix(".corrupt") }.compactMap { file -> (what: String, text: String)? in
            FileManager.default.contents(atPath: stateDir + "/" + file).map { ("\(stateDir)/\(file)", String(decoding: $0, as: UTF8.self)) }
        }
        return Self.leaks(secrets: auditedSecrets, tokens: Set(auditedTokens), texts: [("the daemon log", log)] + extra, stateFiles: state)
    }

    /// The audit itself: every text that holds one of `secrets` or a whole one of `tokens`, and every state file
    /// that holds a secret.
    static func leaks(
        secrets: [String],
        tokens: Set<String>,
        texts: [(what: String, text: String)],
        stateFiles: [(what: String, text: String)]
    ) -> [String] {
        var findings: [String] = []
        for (what, text) in texts {
            for secret in secrets where holds(text, secret) { findings.append("\(what) holds the secret \(secret.prefix(3))…") }
            // Tokens are words of [A-Za-z0-9._-]: one pass over the text finds them, whatever their number. A word
            // is also taken without the dots, dashes and underscores around it (a token at the end of a sentence).
            let words = text.split { !($0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0))) }
            let candidates = Set(
                words.flatMap { word in [String(word), String(word.trimmingCharacters(in: CharacterSet(charactersIn: "._-")))] }
            )
            for word in candidates.intersection(tokens) {
                findings.append("\(what) holds the token \(WireDecoding.fingerprint(word))")
            }
        }
        for (what, text) in stateFiles {
            for secret in secrets where holds(text, secret) { findings.append("\(what) holds the secret \(secret.prefix(3))…") }
        }
        return findings
    }

    /// Byte-wise substring search (Foundation's `contains` is slow on logs of megabytes).
    static func holds(_ text: String, _ needle: String) -> Bool {
        text.utf8.firstRange(of: needle.utf8) != nil
    }

    struct Answer {
        var status: Int
        var body: String
        var headers: [(String, String)]

        func json<T: Decodable>(_ type: T.Type) throws -> T {
            try JSONDecoder().decode(type, from: Data(body.utf8))
        }
    }

    /// A GET over the Unix socket.
    func get(_ uri: String) async throws -> Answer {
        guard let url = URL(httpURLWithSocketPath: socketPath, uri: uri) else { throw POSIXError(.EINVAL) }
        let request = HTTPClientRequest(url: url.absoluteString)
        let response = try await client.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        return Answer(
            status: Int(response.status.code),
            body: String(buffer: body),
            headers: response.headers.map { ($0.name, $0.value) }
        )
    }

    func token(_ name: String) async throws -> String? {
        let answer = try await get("/v1/tokens/\(name)?format=raw")
        return answer.status == 200 ? answer.body : nil
    }

    var log: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    func cacheFileExists(_ name: String) -> Bool {
        FileManager.default.fileExists(atPath: "\(stateDir)/\(name).json")
    }

    /// Stops a daemon still running (SIGTERM, then SIGKILL after 15 s, which is an issue), audits what every daemon of
    /// this harness left, runs the test's teardown work, stops every endpoint and removes the temporary directory.
    ///
    /// ``with(lifetime:settings:_:)`` awaits it; nothing is left behind in `/tmp`.
    func tearDown() async {
        if let process, process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Deadline(15)
            while process.isRunning, !deadline.passed, !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(20))
            }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                if !Task.isCancelled { Issue.record("tokend did not stop within 15 s of SIGTERM; log: \(log.suffix(2000))") }
            }
        }
        process = nil
        if let pid = detachedPID {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            let deadline = Deadline(15)
            while waitpid(pid, &status, WNOHANG) == 0 {
                if deadline.passed {
                    kill(pid, SIGKILL)
                    _ = waitpid(pid, &status, 0)
                    break
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
            detachedPID = nil
        }
        if everStarted { recordLeaks() }
        for work in teardownWork { await work() }
        for server in [endpoint] + audited.endpoints { await server.stop() }
        notify.close()
        try? await client.shutdown()
        try? FileManager.default.removeItem(atPath: root)
    }

    /// The built `tokend` binary: `$TOKEND_BINARY`, or `.build/debug/tokend` beside this package.
    static func binaryPath() throws -> String {
        if let path = ProcessInfo.processInfo.environment["TOKEND_BINARY"] { return path }
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        for candidate in [
            ".build/debug/tokend", ".build/x86_64-unknown-linux-gnu/debug/tokend", ".build/aarch64-unknown-linux-gnu/debug/tokend",
        ] {
            let path = url.appendingPathComponent(candidate).path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw HarnessError("tokend binary not found; run `swift build` first or set TOKEND_BINARY")
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` seconds pass (then throws, naming `what`).
func eventually(
    _ what: String,
    timeout: Double = 10,
    _ condition: @Sendable () async throws -> Bool
) async throws {
    let deadline = Deadline(timeout)
    while !deadline.passed {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    if try await condition() { return }
    throw HarnessError("timed out after \(timeout) s waiting for: \(what)")
}

/// What a test may do as the user it runs as: tests that switch to other uids (setpriv) or give files to groups the
/// user is not in need root, and say so when they are skipped (`make test` as an ordinary user).
enum Privileges {
    static let isRoot = getuid() == 0

    /// The name of group `gid` on this host (gid 65534 is "nogroup" on Debian, "nobody" elsewhere), or nil.
    static func groupName(_ gid: gid_t) -> String? {
        guard let entry = getgrgid(gid), let name = entry.pointee.gr_name else { return nil }
        return String(cString: name)
    }

    /// A group the daemon (running as this user) may give files and sockets to, and its name: the overflow group
    /// 65534 as root, this user's primary group otherwise (a user may only chown to a group it is in).
    static var foreignGroup: (gid: gid_t, name: String)? {
        let gid = isRoot ? gid_t(65534) : getgid()
        return groupName(gid).map { (gid, $0) }
    }
}

/// A point some seconds ahead on the monotonic clock.
///
/// Test deadlines and stopwatches must survive a wall-clock step: a CI machine's clock once jumped forward in the
/// middle of a test, and a ten-second wait built on `Date()` gave up after two.
struct Deadline {
    let instant: ContinuousClock.Instant

    init(_ seconds: Double) { instant = .now + .milliseconds(Int64(seconds * 1000)) }

    var passed: Bool { ContinuousClock.now >= instant }

    /// Seconds left, negative once passed.
    var left: Double { (instant - .now).seconds }
}

/// Seconds elapsed on the monotonic clock since it was made.
struct Stopwatch {
    let start = ContinuousClock.now

    var elapsed: Double { (ContinuousClock.now - start).seconds }
}

extension Duration {
    /// This duration in (fractional) seconds.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
