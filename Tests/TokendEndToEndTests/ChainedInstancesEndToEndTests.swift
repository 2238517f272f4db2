import Foundation
import Testing
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// SPEC §11 with the real binary: a rotating secret file picked up without a SIGHUP (inotify), chains of two and three
/// instances against a token-exchange endpoint that checks each subject token, and cycles as `check` errors.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ChainedInstancesEndToEndTests {
    /// A token-exchange connector (the recipe's shape) pointed at the harness's endpoint.
    static func exchangeConnector(_ harness: DaemonHarness) -> String {
        """
        token_url   = "\(harness.endpoint.tokenURL)"
        client_auth = "client_secret_basic"
        [body]
        grant_type         = "urn:ietf:params:oauth:grant-type:token-exchange"
        subject_token      = "{{subject_token}}"
        subject_token_type = "urn:ietf:params:oauth:token-type:access_token"
        [variables.subject_token]
        required = true
        secret = true
        """
    }

    /// An instance of the exchange connector whose subject token is `input`'s token.
    func writeExchange(_ harness: DaemonHarness, _ name: String, input: String, extra: String = "") throws {
        let secret = try harness.writeSecret(name, "s3cret-\(name)")
        try harness.writeRaw(
            name,
            """
            connector = "exchange"
            \(extra)
            [variables]
            client_id     = "\(name)"
            client_secret = { file = "\(secret)" }
            subject_token = { instance = "\(input)" }
            """
        )
    }

    /// The subject tokens the endpoint accepted from `client`, in order.
    static func subjects(_ harness: DaemonHarness, from client: String) -> [String] {
        harness.endpoint.requests.filter { $0.clientCredentials?.id == client }.compactMap { $0.formFields["subject_token"] }
    }

    /// The endpoint accepts a subject token only when it issued it and it has not expired.
    static func checkSubjects(_ endpoint: LocalTokenServer) {
        endpoint.requireTokenExchange { [endpoint] subject in
            guard let expiry = endpoint.trueExpiry(of: subject) else { return "not a token this server issued" }
            return expiry > Date() ? nil : "the subject token has expired"
        }
    }

    @Test func chainsOfTwoAndThreeFollowTheirInputs() async throws {
        try await DaemonHarness.with(lifetime: 4) { harness in
            Self.checkSubjects(harness.endpoint)
            try harness.writeConnector("exchange", Self.exchangeConnector(harness))
            try harness.writeInstance("root")
            try writeExchange(harness, "middle", input: "root", extra: "bound_to_input = true")
            try writeExchange(harness, "leaf", input: "middle")
            try harness.start()
            try await harness.waitUntilReady()

            // Each link exchanged the token its input serves (4 s tokens refresh every 3 s, so compare with what is
            // served at the moment of asking, not with the first exchange).
            try await eventually("middle exchanged root's token, leaf middle's") {
                guard let root = try await harness.token("root"), let middle = try await harness.token("middle") else { return false }
                return Self.subjects(harness, from: "middle").contains(root) && Self.subjects(harness, from: "leaf").contains(middle)
            }
            let root = try #require(try await harness.token("root"))
            let middle = try #require(try await harness.token("middle"))
            let leaf = try #require(try await harness.token("leaf"))

            // bound_to_input: `middle` is never served past `root`'s token.
            let statuses = try await harness.get("/v1/instances").json(InstanceList.self).instances
            let expiries = Dictionary(uniqueKeysWithValues: statuses.map { ($0.name, $0.expiresAt ?? 0) })
            #expect((expiries["middle"] ?? .max) <= (expiries["root"] ?? 0), "\(expiries)")

            // A new `root` token refetches `middle`, and that one `leaf`, each with the new subject token.
            try await eventually("root refreshed and the chain followed", timeout: 15) {
                guard let newRoot = try await harness.token("root"), newRoot != root else { return false }
                let middles = Self.subjects(harness, from: "middle")
                guard middles.contains(newRoot), let newMiddle = try await harness.token("middle"), newMiddle != middle else {
                    return false
                }
                guard Self.subjects(harness, from: "leaf").contains(newMiddle) else { return false }
                return try await harness.token("leaf") != leaf
            }
            // Every exchange the endpoint answered was accepted (the check refuses a stale or unknown subject token).
            let refused = harness.endpoint.requests.count - harness.endpoint.issuedTokens.count
            #expect(refused == 0)
        }
    }

    @Test func aFailingInputShowsAsDependencyFailed() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeConnector("exchange", Self.exchangeConnector(harness))
            try harness.writeInstance("root", secret: "wrong")
            harness.endpoint.expectClient(id: "root", secret: "right")
            try writeExchange(harness, "leaf", input: "root")
            try harness.start()
            try await harness.waitUntilReady()
            let statuses = try await harness.get("/v1/instances").json(InstanceList.self).instances
            let leaf = try #require(statuses.first { $0.name == "leaf" })
            #expect(leaf.lastError?.code == "dependency_failed", "\(statuses)")
            #expect(leaf.lastError?.message.contains("'root'") == true)
            #expect(leaf.lastError?.message.contains("invalid_client") == true)
            #expect(Self.subjects(harness, from: "leaf").isEmpty)
        }
    }

    @Test func aCycleIsACheckErrorNamingBothFiles() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeConnector("exchange", Self.exchangeConnector(harness))
            try writeExchange(harness, "ping", input: "pong")
            try writeExchange(harness, "pong", input: "ping")
            let (status, stdout, stderr) = try harness.runCLI(["check", "--config-dir", harness.configDir])
            #expect(status != 0)
            let output = stdout + stderr
            for name in ["ping", "pong"] {
                let lines = output.split(separator: "\n").filter { $0.hasPrefix("\(harness.configDir)/instances/\(name).toml:") }
                #expect(lines.count == 1, "\(output)")
                #expect(lines.first?.contains("instances/ping.toml, \(harness.configDir)/instances/pong.toml") == true, "\(output)")
            }
        }
    }

    /// A secret file replaced by a rename, then rewritten in place, then deleted, while the daemon runs: each new
    /// value is used at once (inotify, no SIGHUP); a deleted file keeps its last value and is reported.
    @Test func aRotatingSecretFileIsPickedUpWithoutAReload() async throws {
        try await DaemonHarness.withRunning("app") { harness in
            let path = harness.root + "/secrets/app"
            let first = try #require(try await harness.token("app"))
            #expect(harness.endpoint.requests.last?.clientCredentials?.secret == "s3cret-value")

            // Atomically: a new file renamed over the old one.
            harness.audit(secret: "rotated-by-rename")
            try "rotated-by-rename\n".write(toFile: path + ".new", atomically: false, encoding: .utf8)
            #expect(rename(path + ".new", path) == 0)
            try await eventually("the renamed file's secret was used") {
                harness.endpoint.requests.last?.clientCredentials?.secret == "rotated-by-rename"
            }
            try await eventually("a new token is served") { try await harness.token("app") != first }

            // In place: truncated and written.
            harness.audit(secret: "rotated-in-place")
            let handle = try #require(FileHandle(forWritingAtPath: path))
            try handle.truncate(atOffset: 0)
            try handle.write(contentsOf: Data("rotated-in-place\n".utf8))
            try handle.close()
            try await eventually("the rewritten file's secret was used") {
                harness.endpoint.requests.last?.clientCredentials?.secret == "rotated-in-place"
            }

            // Deleted: the last value stays, the instance says why.
            let served = try await harness.token("app")
            try FileManager.default.removeItem(atPath: path)
            try await eventually("input_unreadable is reported") {
                let statuses = try await harness.get("/v1/instances").json(InstanceList.self).instances
                return statuses.first?.lastError?.code == "input_unreadable"
            }
            #expect(try await harness.token("app") == served)
            #expect(harness.log.contains("input unreadable; the last good value is kept"))
            #expect(harness.log.contains("rotated-in-place") == false)
        }
    }
}

/// `GET /v1/instances`, decoded with Foundation.
struct InstanceList: Decodable, Sendable {
    var instances: [InstanceEntry]
}

/// One entry of `GET /v1/instances`.
struct InstanceEntry: Decodable, Sendable, CustomStringConvertible {
    struct LastError: Decodable, Sendable {
        var code: String
        var message: String
    }

    enum CodingKeys: String, CodingKey {
        case name, state
        case expiresAt = "expires_at"
        case lastError = "last_error"
    }

    var name: String
    var state: String
    var expiresAt: Int?
    var lastError: LastError?

    var description: String { "\(name): \(state) \(lastError?.code ?? "-")" }
}
