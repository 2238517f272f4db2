import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// SPEC §2 and §9 with the real binary: the command line and where the config directory comes from.
@Suite(.serialized, .timeLimit(.minutes(3))) struct CommandLineEndToEndTests {
    @Test func versionPrintsOneVersionLineAndExitsZero() throws {
        let result = try runCommand([try DaemonHarness.binaryPath(), "--version"])
        #expect(result.status == 0)
        #expect(result.stderr.isEmpty, "\(result.stderr)")
        #expect(result.stdout.wholeMatch(of: try Regex(#"[0-9]+\.[0-9]+\.[0-9]+\n"#)) != nil, "\(result.stdout.debugDescription)")
    }

    /// `tokend token NAME --min-valid N`: the current token when it has N seconds left; otherwise one refresh,
    /// waited for, and the new token; exit 1 with the daemon's reason when no token can have that much.
    @Test func tokenMinValidRefreshesATokenThatHasTooLittleLeft() async throws {
        try await DaemonHarness.withRunning("alpha", lifetime: 60) { harness in
            let first = try #require(harness.endpoint.issuedTokens.first)
            let socket = ["--socket", harness.socketPath]
            // 60 s tokens are served for 55 s: 30 s is there already.
            let current = try harness.runCLI(["token", "alpha", "--min-valid", "30"] + socket)
            #expect(current.status == 0, "\(current.stderr)")
            #expect(current.stdout == first + "\n")
            #expect(harness.endpoint.requestCount == 1)

            // Once min_interval (1 s) has passed and less than 54 s is left: a refresh, and its token.
            try await Task.sleep(for: .milliseconds(1500))
            let fresh = try harness.runCLI(["token", "alpha", "--min-valid", "54", "--format", "json"] + socket)
            #expect(fresh.status == 0, "\(fresh.stderr)")
            let body = try JSONDecoder().decode(API.TokenBody.self, from: Data(fresh.stdout.utf8))
            #expect(body.access_token != first, "the old token was printed")
            #expect(harness.endpoint.issuedTokens.dropFirst().first == body.access_token)
            #expect(body.expires_in >= 54, "\(body.expires_in)")
            #expect(harness.endpoint.requestCount == 2)

            // More than any token gets, right after a refresh: refused, not refreshed in a loop.
            let impossible = try harness.runCLI(["token", "alpha", "--min-valid", "3600"] + socket)
            #expect(impossible.status == 1)
            #expect(impossible.stderr.hasPrefix("tokend: no_valid_token: "), "\(impossible.stderr)")
            #expect(harness.endpoint.requestCount == 2)
            #expect(try await harness.stop() == 0)
        }
    }

    /// `tokend status --json`: the daemon's `/v1/instances` as JSON, read here with Foundation's parser: one entry per
    /// instance with its state, fingerprint, expiry, next refresh, outage budget, failures and last error, and
    /// never a token or a secret.
    @Test func statusJSONDescribesEveryInstance() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha", secret: "status-json-secret")
            // Port 1 on loopback refuses: a network failure.
            try harness.writeInstance("down", tokenURL: "http://127.0.0.1:1/token")
            try harness.start()
            try await harness.waitUntilReady()
            let token = try #require(try await harness.token("alpha"))
            let issuedAt = try #require(harness.endpoint.requests.first?.receivedAt).timeIntervalSince1970

            let result = try harness.runCLI(["status", "--json", "--socket", harness.socketPath])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(!result.stdout.contains(token) && !result.stdout.contains("status-json-secret"))
            let document = try #require(WireDecoding.jsonObject(Array(result.stdout.utf8)), "not a JSON object: \(result.stdout)")
            guard case .array(let entries)? = document["instances"] else {
                Issue.record("no instances array: \(result.stdout)")
                return
            }
            var byName: [String: [String: TestJSON]] = [:]
            for case .object(let entry) in entries {
                if case .string(let name)? = entry["name"] { byName[name] = entry }
            }
            #expect(Set(byName.keys) == ["alpha", "down"], "\(result.stdout)")
            func number(_ value: TestJSON?) -> Double? {
                if case .number(let number)? = value { return number }
                return nil
            }

            let alpha = try #require(byName["alpha"])
            #expect(alpha["state"] == .string("valid"))
            #expect(alpha["token_fingerprint"] == .string(WireDecoding.fingerprint(token)))
            let expiresAt = try #require(number(alpha["expires_at"]))
            #expect(abs(expiresAt - (issuedAt + 3600)) <= 2, "expires_at \(expiresAt), issued at \(issuedAt)")
            // ratio 0.75 of 3600 s, ± 10 % of the 900 s lead.
            let nextRefresh = try #require(number(alpha["next_refresh"]))
            #expect(
                (issuedAt + 2700 - 92...issuedAt + 2700 + 92).contains(nextRefresh),
                "next_refresh \(nextRefresh - issuedAt) s after the fetch"
            )
            let budget = try #require(number(alpha["outage_budget_seconds"]))
            #expect((3585...3595).contains(budget), "outage budget \(budget)")
            #expect(number(alpha["consecutive_failures"]) == 0)
            #expect(alpha["last_error"] == nil || alpha["last_error"] == .null)

            let down = try #require(byName["down"])
            #expect(down["state"] == .string("failing"))
            #expect(down["token_fingerprint"] == nil || down["token_fingerprint"] == .null)
            #expect(number(down["outage_budget_seconds"]) == 0)
            #expect((number(down["consecutive_failures"]) ?? 0) >= 1)
            guard case .object(let lastError)? = down["last_error"] else {
                Issue.record("down has no last_error: \(result.stdout)")
                return
            }
            #expect(lastError["code"] == .string("network"))
            #expect(lastError["kind"] == .string("transient"))
            #expect(try await harness.stop() == 0)
        }
    }

    /// SPEC §6: a file that fails validation is reported in the log, `STATUS=` and `tokend status`, and the other
    /// instances run.
    @Test func statusShowsConfigErrors() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("good")
            try harness.writeRaw(
                "broken",
                "token_url = \"\(harness.endpoint.tokenURL)\"\ntoken_kye = \"x\"\n[variables]\nclient_id = \"a\"\nclient_secret = \"b\"\n"
            )
            try harness.start()
            try await harness.waitUntilReady()
            let diagnostic = "\(harness.configDir)/instances/broken.toml:2: token_kye: unknown key (did you mean 'token_key'?)"
            #expect(harness.loggedConfigErrors == [diagnostic])
            // Issue 18: STATUS= names the broken file.
            #expect(
                harness.notify.assignments.contains { $0.hasPrefix("STATUS=") && $0.contains("1 config error (instances/broken.toml)") },
                "\(harness.notify.assignments)"
            )
            // The other instance runs; the broken one is not served.
            #expect(try await harness.token("good") != nil)
            #expect(try await harness.get("/v1/tokens/broken").status == 404)
            let status = try harness.runCLI(["status", "--socket", harness.socketPath])
            #expect(status.status == 0)
            #expect((status.stdout + status.stderr).contains(diagnostic), "\(status.stdout)\(status.stderr)")
            #expect(try await harness.stop() == 0)
        }
    }

    /// SPEC §2: the config directory is `--config-dir`, else `TOKEND_CONFIG_DIR`, else systemd's
    /// `$CONFIGURATION_DIRECTORY`, else /etc/tokend.
    ///
    /// `tokend check` names the directory it read; `tokend run` serves the instances of the directory the environment
    /// names.
    @Test func theConfigDirectoryComesFromTheFlagThenTOKENDConfigDirThenSystemd() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha")
            let elsewhere = harness.root + "/elsewhere"
            try FileManager.default.createDirectory(atPath: elsewhere + "/instances", withIntermediateDirectories: true)
            let binary = try DaemonHarness.binaryPath()
            /// `tokend check` in an environment of only these variables.
            func check(_ variables: [String: String], _ arguments: [String] = []) throws -> CommandResult {
                try runCommand(
                    ["/usr/bin/env", "-i"] + variables.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" } + [binary, "check"]
                        + arguments
                )
            }
            let config = harness.configDir
            for (variables, arguments, expected) in [
                (["TOKEND_CONFIG_DIR": config], [], config),
                (["CONFIGURATION_DIRECTORY": config], [], config),
                (["TOKEND_CONFIG_DIR": config, "CONFIGURATION_DIRECTORY": elsewhere], [], config),
                (["TOKEND_CONFIG_DIR": elsewhere], ["--config-dir", config], config),
            ] as [([String: String], [String], String)] {
                let result = try check(variables, arguments)
                #expect(result.status == 0, "\(variables) \(arguments): \(result.stderr)")
                #expect(result.stdout.hasPrefix("\(expected): 1 instance(s) valid"), "\(variables) \(arguments): \(result.stdout)")
            }
            let fallback = try check([:])
            #expect((fallback.stdout + fallback.stderr).contains("/etc/tokend"), "\(fallback.stdout)\(fallback.stderr)")
            #expect(!(fallback.stdout + fallback.stderr).contains(config))

            // The daemon itself, without --config-dir.
            try harness.start(passConfigDir: false, environment: ["TOKEND_CONFIG_DIR": config, "CONFIGURATION_DIRECTORY": elsewhere])
            try await harness.waitUntilReady()
            let token = try #require(try await harness.token("alpha"), "log: \(harness.log)")
            #expect(try await harness.stop() == 0)
            try harness.start(passConfigDir: false, environment: ["CONFIGURATION_DIRECTORY": config])
            try await harness.waitUntilReady(count: 2)
            #expect(try await harness.token("alpha") == token, "log: \(harness.log)")
            #expect(try await harness.stop() == 0)
        }
    }
}

/// SPEC §5, §6, §10 with the real binary: signals, the watchdog, reloads of secrets, the cache across a changed
/// definition, `Retry-After`, admins, and what the daemon settings and instance files control.
@Suite(.serialized, .timeLimit(.minutes(3))) struct DaemonContractEndToEndTests {
    /// SIGINT is SIGTERM's twin: `STOPPING=1`, exit 0, the socket file removed.
    @Test func sigintStopsCleanly() async throws {
        try await DaemonHarness.withRunning("alpha") { harness in
            let process = try #require(harness.process)
            harness.signal(SIGINT)
            try await eventually("tokend exits after SIGINT") { !process.isRunning }
            #expect(process.terminationReason == .exit, "killed by the signal")
            #expect(process.terminationStatus == 0)
            let assignments = harness.notify.assignments
            let ready = try #require(assignments.firstIndex(of: "READY=1"))
            let stopping = try #require(assignments.firstIndex(of: "STOPPING=1"), "\(assignments)")
            #expect(ready < stopping)
            #expect(harness.log.contains("signal=SIGINT"), "\(harness.log)")
            #expect(!FileManager.default.fileExists(atPath: harness.socketPath))
            // Without WATCHDOG_USEC, no watchdog pings at all.
            #expect(!assignments.contains("WATCHDOG=1"))
        }
    }

    /// SPEC §10: `WATCHDOG=1` at half of `WATCHDOG_USEC`.
    ///
    /// With 1 s that is 8 pings in 4 s; pinging at the full period would give 4, at a quarter 16.
    @Test func watchdogPingsArriveAtHalfTheWatchdogPeriod() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha")
            try harness.start(watchdogMicroseconds: 1_000_000)
            try await harness.waitUntilReady()
            func pings() -> Int { harness.notify.assignments.filter { $0 == "WATCHDOG=1" }.count }
            let before = pings()
            let started = Stopwatch()
            try await Task.sleep(for: .seconds(4))
            let counted = pings() - before
            let elapsed = started.elapsed
            #expect((6...10).contains(counted), "\(counted) pings in \(elapsed) s")
            #expect(try await harness.stop() == 0)
        }
    }

    /// SPEC §4: secret files are read again on every reload.
    ///
    /// The provider rotates the client's secret; the file gets the new one, SIGHUP: the next request carries it, and
    /// its token is served.
    @Test func aReloadReadsChangedSecretFilesAgain() async throws {
        try await DaemonHarness.with { harness in
            harness.endpoint.expectClient(id: "alpha", secret: "first-secret-value")
            try harness.writeInstance("alpha", secret: "first-secret-value")
            try harness.start()
            try await harness.waitUntilReady()
            let first = try #require(try await harness.token("alpha"))
            let before = harness.endpoint.requestCount

            harness.endpoint.expectClient(id: "alpha", secret: "second-secret-value")
            _ = try harness.writeSecret("alpha", "second-secret-value")
            harness.signal(SIGHUP)
            try await harness.waitUntilReady(count: 2)
            try await eventually("a request with the new secret", timeout: 10) {
                harness.endpoint.requests.dropFirst(before).contains { $0.clientCredentials?.secret == "second-secret-value" }
            }
            try await eventually("the token it got is served") {
                let token = try await harness.token("alpha")
                return token != nil && token != first
            }
            let after = harness.endpoint.requests.dropFirst(before)
            #expect(after.allSatisfy { $0.clientCredentials?.secret == "second-secret-value" }, "the old secret was sent again")
            #expect(try await harness.stop() == 0)
        }
    }

    /// SPEC §7: on start a cached token whose request definition changed is not served; a new one is fetched, and
    /// no caller, not even one that asks while the daemon starts, gets the old one.
    @Test func aCachedTokenIsDroppedAtStartWhenTheDefinitionChanged() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha", scope: "read")
            try harness.start()
            try await harness.waitUntilReady()
            let old = try #require(try await harness.token("alpha"))
            #expect(try await harness.stop() == 0)

            try harness.writeInstance("alpha", scope: "read write")
            harness.endpoint.setResponseDelay(milliseconds: 800)
            try harness.start()
            // Ask while it starts (a caller then waits for the first fetch).
            var served: [String] = []
            try await eventually("the socket accepts") { unixSocketAcceptsConnections(at: harness.socketPath) }
            func readies() -> Int { harness.notify.assignments.filter { $0 == "READY=1" }.count }
            while readies() < 2, harness.process?.isRunning == true {
                let answer = try await harness.get("/v1/tokens/alpha?format=raw")
                if answer.status == 200 { served.append(answer.body) }
            }
            try await harness.waitUntilReady(count: 2)
            for format in ["", "?format=raw", "?format=header", "?min_valid=0"] {
                let answer = try await harness.get("/v1/tokens/alpha" + format)
                #expect(answer.status == 200, "\(format): \(answer.body)")
                served.append(answer.body)
            }
            let new = try #require(harness.endpoint.issuedTokens.dropFirst().first, "no new fetch")
            #expect(!served.contains { $0.contains(old) }, "the old token was served after the definition changed")
            #expect(served.allSatisfy { $0.contains(new) }, "\(served)")
            #expect(harness.endpoint.requestCount == 2)
            #expect(harness.endpoint.requests.last?.bodyText == "grant_type=client_credentials&scope=read%20write")
            #expect(try await harness.stop() == 0)
            // After the drain and flush of a clean stop, the cache holds the new token only.
            let cache = try String(contentsOfFile: harness.stateDir + "/alpha.json", encoding: .utf8)
            #expect(!cache.contains(old) && cache.contains(new))
        }
    }

    /// SPEC §8: "A token is durable in the cache before it is served." A caller that waits for a refresh
    /// (`min_valid`) reads the cache file the moment it gets the new token: the file must hold it already (issue 18:
    /// a SIGKILL right after would not lose it).
    @Test
    func aTokenIsInTheCacheBeforeItIsServed() async throws {
        try await DaemonHarness.withRunning("alpha", lifetime: 60) { harness in
            var late: [Int] = []
            for round in 0..<8 {
                // min_interval (1 s) passes; the 60 s token then has less than 54 s of its 55 s of serving left.
                try await Task.sleep(for: .milliseconds(1100))
                let answer = try await harness.get("/v1/tokens/alpha?format=raw&min_valid=54")
                let cache = try String(contentsOfFile: harness.stateDir + "/alpha.json", encoding: .utf8)
                #expect(answer.status == 200, "round \(round): \(answer.body)")
                if !cache.contains(answer.body) { late.append(round) }
            }
            #expect(harness.endpoint.requestCount == 9)
            #expect(late.isEmpty, "rounds whose served token was not in the cache yet: \(late)")
            #expect(try await harness.stop() == 0)
        }
    }

    /// Settings and an endpoint that refuses the client for good: the first attempt fails before READY=1 and the
    /// next comes `permanent_retry` (6 s) later.
    static let permanentRetrySettings = DaemonHarness.fastSettings + "\npermanent_retry = \"6s\"\n"

    /// The 503 for `uri`, the moment it came and its `Retry-After`.
    static func unavailable(_ harness: DaemonHarness, _ uri: String) async throws -> (uri: String, at: Date, retryAfter: Int) {
        let answer = try await harness.get(uri)
        let at = Date()
        #expect(answer.status == 503, "\(uri): \(answer.body)")
        let body = try? answer.json(API.ErrorBody.self)
        #expect(body?.error == "no_valid_token" && body?.last_error == "invalid_client", "\(uri): \(answer.body)")
        let header = answer.headers.first { $0.0.lowercased() == "retry-after" }?.1
        let retryAfter = try #require(header.flatMap { Int($0) }, "\(uri): Retry-After \(header ?? "missing")")
        return (uri, at, retryAfter)
    }

    /// `Retry-After` is the wait until `next` in whole seconds, rounded up.
    static func expectRetryAfter(_ answers: [(uri: String, at: Date, retryAfter: Int)], matches next: Date) {
        for answer in answers {
            let remaining = next.timeIntervalSince(answer.at)
            #expect(
                Double(answer.retryAfter) >= remaining - 0.25 && Double(answer.retryAfter) < remaining + 1.25,
                "\(answer.uri): Retry-After \(answer.retryAfter), the next attempt came \(remaining) s later"
            )
        }
    }

    /// SPEC §8: a 503 carries `Retry-After`, the seconds until the instance's next attempt (rounded up).
    @Test func retryAfterOnA503IsTheTimeToTheNextAttempt() async throws {
        try await DaemonHarness.with(settings: Self.permanentRetrySettings) { harness in
            harness.endpoint.setBehavior(.respond(status: 401, headers: [], body: #"{"error":"invalid_client"}"#))
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            try await Task.sleep(for: .milliseconds(1500))
            var answers: [(uri: String, at: Date, retryAfter: Int)] = []
            for uri in ["/v1/tokens/alpha", "/v1/tokens/alpha?format=raw", "/v1/tokens/alpha?format=header"] {
                answers.append(try await Self.unavailable(harness, uri))
            }
            #expect(harness.endpoint.requestCount == 1)
            try await eventually("the next attempt", timeout: 10) { harness.endpoint.requestCount >= 2 }
            Self.expectRetryAfter(answers, matches: harness.endpoint.requests[1].receivedAt)
            #expect(try await harness.stop() == 0)
        }
    }

    /// The same for a caller that asks with `min_valid`: it may start a refresh, but not one `permanent_retry`
    /// forbids, and its 503 says when the next attempt comes.
    @Test func aMinValidRequestWaitsForThePermanentRetryAndSaysWhen() async throws {
        try await DaemonHarness.with(settings: Self.permanentRetrySettings) { harness in
            harness.endpoint.setBehavior(.respond(status: 401, headers: [], body: #"{"error":"invalid_client"}"#))
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            try await Task.sleep(for: .milliseconds(1500))
            let answer = try await Self.unavailable(harness, "/v1/tokens/alpha?min_valid=0")
            #expect(harness.endpoint.requestCount == 1, "the caller made tokend ask the provider again before permanent_retry")
            let again = try await Self.unavailable(harness, "/v1/tokens/alpha?min_valid=0")
            let attempts = harness.endpoint.requestCount
            try await eventually("the next attempt", timeout: 10) { harness.endpoint.requestCount > attempts }
            Self.expectRetryAfter([answer, again], matches: harness.endpoint.requests[attempts].receivedAt)
            #expect(try await harness.stop() == 0)
        }
    }

    /// SPEC §8 and README: refresh and metrics are for root, the daemon's own uid and `admin_group` (primary or
    /// supplementary membership); anyone else gets 403.
    @Test(.enabled(if: Privileges.isRoot, "needs root: setpriv runs the callers as other uids and groups"))
    func adminEndpointsForRootTheDaemonsUserAndAdminGroupOnly() async throws {
        let adminGroup = try #require(Privileges.groupName(65534), "no group 65534 on this host")
        try await DaemonHarness.with(settings: "admin_group = \"\(adminGroup)\"\n" + DaemonHarness.fastSettings) { harness in
            try harness.openUpForOtherUsers()
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            let first = try #require(try await harness.token("alpha"))
            let supplementary = ["setpriv", "--reuid=4242", "--regid=4242", "--groups=65534"]
            let primary = ["setpriv", "--reuid=4243", "--regid=65534", "--clear-groups"]
            let outsider = ["setpriv", "--reuid=4244", "--regid=4244", "--clear-groups"]
            for (caller, status) in [(supplementary, 200), (primary, 200), (outsider, 403), ([], 200)] {
                let metrics = try harness.curl(["http://localhost/metrics"], as: caller)
                #expect(metrics.status == status, "metrics as \(caller): \(metrics.body.prefix(200))")
            }
            #expect(try harness.curl(["-X", "POST", "http://localhost/v1/instances/alpha/refresh"], as: outsider).status == 403)
            #expect(harness.endpoint.requestCount == 1)
            let refresh = try harness.curl(["-X", "POST", "http://localhost/v1/instances/alpha/refresh"], as: supplementary)
            #expect(refresh.status == 202, "\(refresh.body)")
            try await eventually("the refresh an admin asked for") {
                let token = try await harness.token("alpha")
                return token != nil && token != first
            }
            #expect(try await harness.stop() == 0)
        }
    }

    /// SPEC §5: `log_level` in tokend.toml decides what is logged (there is no `--log-level` here).
    @Test func logLevelInTheSettingsDecidesWhatIsLogged() async throws {
        try await DaemonHarness.with(settings: "log_level = \"debug\"\n" + DaemonHarness.fastSettings) { harness in
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            #expect(try await harness.stop() == 0)
            let lines = harness.log.split(separator: "\n")
            #expect(lines.contains { $0.contains(" DEBUG ") }, "no debug line at log_level debug: \(lines)")
            #expect(lines.contains { $0.contains(" INFO token refreshed") }, "\(lines)")
        }
        try await DaemonHarness.with(settings: "log_level = \"warning\"\n" + DaemonHarness.fastSettings) { harness in
            try harness.writeInstance("alpha")
            try harness.writeRaw("broken", "token_url = 42\n")
            try harness.start()
            try await harness.waitUntilReady()
            #expect(try await harness.token("alpha") != nil)
            #expect(try await harness.stop() == 0)
            let lines = harness.log.split(separator: "\n")
            #expect(!lines.contains { $0.contains(" DEBUG ") || $0.contains(" INFO ") }, "below warning at log_level warning: \(lines)")
            #expect(lines.contains { $0.contains(" ERROR config error") && $0.contains("broken.toml") }, "\(lines)")
        }
    }

    /// SPEC §4: an instance file's `[refresh]` overrides tokend.toml's for that instance only.
    ///
    /// With 10 s tokens, ratio 0.2 (no jitter) refreshes after 2 s; the other instance keeps ratio 0.75 (7.5 s).
    @Test func refreshOverridesInAnInstanceFileApplyToThatInstance() async throws {
        try await DaemonHarness.with(lifetime: 10) { harness in
            try harness.writeInstance("early", extra: "[refresh]\nratio = 0.2\njitter = 0.0\n")
            try harness.writeInstance("default")
            try harness.start()
            try await harness.waitUntilReady()
            @Sendable func times(_ id: String) -> [Date] {
                harness.endpoint.requests.filter { $0.clientCredentials?.id == id }.map(\.receivedAt)
            }
            try await eventually("early refreshes", timeout: 6) { times("early").count >= 2 }
            let early = times("early")
            let gap = early[1].timeIntervalSince(early[0])
            #expect(gap >= 1.9 && gap < 3, "refreshed after \(gap) s")
            #expect(times("default").count == 1, "the other instance took the override too")
            #expect(try await harness.stop() == 0)
        }
    }

    /// SPEC §3: a connector's `default_ttl` gives an answer without a lifetime one, and its `expires_at_key` reads an
    /// absolute expiry (epoch seconds or RFC 3339) instead of `expires_in`.
    @Test func defaultTTLAndExpiresAtKeyFromConnectorFiles() async throws {
        try await DaemonHarness.with { harness in
            let noLifetime = LocalTokenServer()
            harness.adopt(noLifetime)
            try await noLifetime.start(port: 0)
            noLifetime.setBehavior(.issueToken(expiresIn: nil))
            let now = Int(Date().timeIntervalSince1970)
            let epoch = LocalTokenServer()
            harness.adopt(epoch)
            try await epoch.start(port: 0)
            epoch.setBehavior(
                .respond(
                    status: 200,
                    headers: [],
                    body: #"{"access_token":"absolute-epoch-token","token_type":"Bearer","expires_at":\#(now + 1800)}"#
                )
            )
            let rfc3339 = LocalTokenServer()
            harness.adopt(rfc3339)
            try await rfc3339.start(port: 0)
            let stamp = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(now + 2400)))
            rfc3339.setBehavior(
                .respond(
                    status: 200,
                    headers: [],
                    body: #"{"access_token":"absolute-rfc3339-token","token_type":"Bearer","expires_at":"\#(stamp)"}"#
                )
            )

            try harness.writeConnector(
                "ttl",
                "token_url = \"\(noLifetime.tokenURL)\"\nclient_auth = \"client_secret_post\"\ndefault_ttl = \"90s\"\n"
            )
            try harness.writeConnector(
                "absolute",
                "token_url = \"{{url}}/token\"\nclient_auth = \"client_secret_post\"\nexpires_at_key = \"expires_at\"\n[variables.url]\nrequired = true\n"
            )
            for (name, connector, url) in [
                ("ttl", "ttl", nil), ("epoch", "absolute", epoch.baseURL), ("rfc3339", "absolute", rfc3339.baseURL),
            ] as [(String, String, String?)] {
                let secret = try harness.writeSecret(name, "secret-of-\(name)")
                try harness.writeRaw(
                    name,
                    "connector = \"\(connector)\"\n[variables]\nclient_id = \"\(name)\"\nclient_secret = { file = \"\(secret)\" }\n"
                        + (url.map { "url = \"\($0)\"\n" } ?? "")
                )
            }
            try harness.start()
            try await harness.waitUntilReady()

            let ttl = try await harness.get("/v1/tokens/ttl").json(API.TokenBody.self)
            #expect(noLifetime.issuedTokens == [ttl.access_token])
            #expect((85...90).contains(ttl.expires_in), "expires_in \(ttl.expires_in) with default_ttl 90s")
            let fromEpoch = try await harness.get("/v1/tokens/epoch").json(API.TokenBody.self)
            #expect(fromEpoch.access_token == "absolute-epoch-token")
            #expect(fromEpoch.expires_at == now + 1800)
            let fromStamp = try await harness.get("/v1/tokens/rfc3339").json(API.TokenBody.self)
            #expect(fromStamp.access_token == "absolute-rfc3339-token")
            #expect(fromStamp.expires_at == now + 2400, "\(stamp)")
            #expect(try await harness.stop() == 0)
        }
    }
}
