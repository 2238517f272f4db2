import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Fleet mode with the real binary (SPEC §14): several daemons (own state, socket and host id) sharing one private
/// PostgreSQL cluster and one local token endpoint.
@Suite(.serialized, .timeLimit(.minutes(5))) struct FleetEndToEndTests {
    static let key = Data((0..<32).map { UInt8(7 &* $0 &+ 3) }).base64EncodedString()
    static let password = "fleet-db-pw-6d1f"

    /// Hosts that share one database and one provider.
    struct Fleet {
        let cluster: PostgresCluster
        let hosts: [DaemonHarness]
        /// The provider every host asks (the first host's endpoint).
        var provider: LocalTokenServer { hosts[0].endpoint }

        /// Every row of the table as text, hex for bytes (as an operator with `psql` would see it).
        func tableDump() async throws -> String {
            try await cluster.sql(
                "SELECT encode(id, 'hex'), generation, encode(sealed, 'escape'), obtained_at, expires_at, fetched_by, lease_holder FROM tokend_fleet",
                database: "tokend"
            )
        }

        /// Sharing rows (the table's reserved row aside).
        func rowCount() async throws -> Int {
            let text = try await cluster.sql("SELECT count(*) FROM tokend_fleet WHERE length(id) = 32", database: "tokend")
            return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }
    }

    static func settings(host: String, port: Int, root: String, minLead: String, lease: String, key: String = key) throws -> String {
        let keyPath = root + "/secrets/fleet.key"
        let passwordPath = root + "/secrets/fleet-db-password"
        try FileManager.default.createDirectory(atPath: root + "/secrets", withIntermediateDirectories: true)
        try key.write(toFile: keyPath, atomically: true, encoding: .utf8)
        try password.write(toFile: passwordPath, atomically: true, encoding: .utf8)
        chmod(keyPath, 0o600)
        chmod(passwordPath, 0o600)
        return """
            [refresh]
            ratio = 0.75
            min_lead = "\(minLead)"
            min_interval = "1s"
            jitter = 0.1
            retry_initial = "200ms"
            retry_max = "1s"

            [fleet]
            database = "postgresql://tokend@127.0.0.1:\(port)/tokend?sslmode=disable"
            password = { file = "\(passwordPath)" }
            key = { file = "\(keyPath)" }
            host_id = "\(host)"
            lease = "\(lease)"
            """
    }

    /// Starts a private cluster and `count` daemons running `instances` against the first daemon's endpoint; runs
    /// `body`, then stops everything.
    static func withFleet(
        hosts count: Int,
        instances: [String],
        lifetime: Int,
        minLead: String,
        lease: String,
        keys: [Int: String] = [:],
        secrets: [Int: String] = [:],
        _ body: (Fleet) async throws -> Void
    ) async throws {
        let cluster = try await PostgresCluster()
        var hosts: [DaemonHarness] = []
        func tearDown() async {
            for host in hosts { await host.tearDown() }
            await cluster.destroy()
        }
        do {
            try await cluster.start()
            try await cluster.createDatabase("tokend", user: "tokend", password: password)
            for index in 0..<count {
                let harness = try await DaemonHarness(lifetime: lifetime, settings: "")
                hosts.append(harness)
                let text = try settings(
                    host: "host-\(index)",
                    port: cluster.port,
                    root: harness.root,
                    minLead: minLead,
                    lease: lease,
                    key: keys[index] ?? key
                )
                try text.write(toFile: harness.configDir + "/tokend.toml", atomically: true, encoding: .utf8)
            }
            let provider = hosts[0].endpoint
            for host in hosts {
                for name in instances {
                    let index = hosts.firstIndex { $0 === host } ?? 0
                    try host.writeInstance(name, secret: secrets[index] ?? "s3cret-value", tokenURL: provider.tokenURL)
                }
            }
            for host in hosts {
                try host.start()
                try await host.waitUntilReady()
            }
            try await body(Fleet(cluster: cluster, hosts: hosts))
        } catch {
            await tearDown()
            throw error
        }
        await tearDown()
    }

    /// 3 hosts × 20 instances with 4 s tokens for about four lifetimes: the provider sees about one request per
    /// instance per refresh, every host serves every instance, and none serves an expired token.
    @Test func threeHostsShareOneTokenPerInstance() async throws {
        let names = (0..<20).map { "i\($0)" }
        try await Self.withFleet(hosts: 3, instances: names, lifetime: 4, minLead: "2s", lease: "1s") { fleet in
            #expect(fleet.provider.requestCount <= 22, "start-up: \(fleet.provider.requestCount) requests for 20 instances")
            let started = Stopwatch()
            var expiredServed: [String] = []
            var missing: [String] = []
            while started.elapsed < 16 {
                for (index, host) in fleet.hosts.enumerated() {
                    for name in names {
                        guard let token = try await host.token(name) else {
                            missing.append("host-\(index)/\(name)")
                            continue
                        }
                        if let expiry = fleet.provider.trueExpiry(of: token), expiry <= Date() {
                            expiredServed.append("host-\(index)/\(name)")
                        }
                    }
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(expiredServed.isEmpty, "\(expiredServed)")
            #expect(missing.isEmpty, "\(missing.prefix(10))")
            // 16 s of 4 s tokens refreshed about every 2 s (± 10 % jitter): about 8 refreshes of 20 instances after
            // the first round. A request for an instance less than 1 s after its previous one is a second request
            // for the same refresh (standalone, two of every three are); at most 10 % of them may be (≤ 1.1 × M per
            // refresh cycle).
            let later = fleet.provider.requests.dropFirst(20)
            var last: [String: Date] = [:]
            var repeated = 0
            for request in later {
                let client = request.clientCredentials?.id ?? "?"
                if let previous = last[client], request.receivedAt.timeIntervalSince(previous) < 1 { repeated += 1 }
                last[client] = request.receivedAt
            }
            #expect(Double(repeated) <= 0.1 * Double(later.count), "\(repeated) of \(later.count) requests repeated a refresh")
            #expect(later.count >= 4 * 20, "tokens were not refreshed: \(later.count) requests after the first round")
            #expect(later.count <= 10 * 20, "\(later.count) requests after the first round: more than one per refresh")
            // Each host fetched some and took the others from the fleet.
            let body = try await fleet.hosts[1].get("/v1/instances").json(API.InstancesBody.self)
            #expect(body.fleet?.state == "connected")
            #expect(body.instances.allSatisfy { $0.fleet != nil })
            #expect(try await fleet.rowCount() == 20)
        }
    }

    /// What the database holds: no token, secret or instance name, in any column.
    @Test func theRowsHoldNoTokenSecretOrName() async throws {
        try await Self.withFleet(hosts: 2, instances: ["billing-api", "reports-api"], lifetime: 3600, minLead: "60s", lease: "20s") {
            fleet in
            let dump = try await fleet.tableDump()
            #expect(dump.contains("host-0"), "the dump shows rows: \(dump)")
            for token in fleet.provider.issuedTokens { #expect(!dump.contains(token), "a token is in the table") }
            for secret in ["s3cret-value", Self.password, Self.key] { #expect(!dump.contains(secret), "a secret is in the table") }
            for name in ["billing-api", "reports-api", "billing", "reports"] { #expect(!dump.contains(name), "\(name) is in the table") }
            #expect(fleet.provider.requestCount == 2)
        }
    }

    /// One host's invalidation: one new provider request for the fleet, and every host serves the replacement.
    @Test func oneInvalidationOneRequest() async throws {
        try await Self.withFleet(hosts: 3, instances: ["alpha"], lifetime: 3600, minLead: "60s", lease: "20s") { fleet in
            #expect(fleet.provider.requestCount == 1)
            let first = try #require(try await fleet.hosts[0].token("alpha"))
            try await Task.sleep(for: .milliseconds(1100))  // min_interval 1 s after the first fetch
            let fingerprint = TokenFingerprint.of(Secret(first))
            let answer = try await fleet.hosts[2].curlAsync([
                "-X", "POST", "-d", #"{"fingerprint":"\#(fingerprint)"}"#, "http://localhost/v1/tokens/alpha/invalidate",
            ])
            #expect(answer.status == 202, "\(answer.body)")
            try await eventually("every host serves the replacement") {
                var served: Set<String?> = []
                for host in fleet.hosts { served.insert(try await host.token("alpha")) }
                return served.count == 1 && served.first! != nil && served.first! != first
            }
            #expect(fleet.provider.requestCount == 2)
        }
    }

    /// A host with a wrong fleet key says so, fetches on its own and never serves the fleet's token.
    ///
    /// A host with another client secret for the same instance name does not share the row.
    @Test func aWrongKeyOrAnotherSecretDoesNotShare() async throws {
        let wrongKey = Data((0..<32).map { UInt8(255 - $0) }).base64EncodedString()
        try await Self.withFleet(
            hosts: 3,
            instances: ["alpha"],
            lifetime: 3600,
            minLead: "60s",
            lease: "20s",
            keys: [1: wrongKey],
            secrets: [2: "another-secret"]
        ) { fleet in
            let wrong = try await fleet.hosts[1].get("/v1/instances").json(API.InstancesBody.self)
            #expect(wrong.fleet?.state == "key mismatch")
            let status = fleet.hosts[1].notify.assignments.last { $0.hasPrefix("STATUS=") } ?? ""
            #expect(status.contains("fleet: key mismatch"), "\(status)")
            #expect(fleet.hosts[1].log.contains("fleet key mismatch"))
            let tokens = [
                try await fleet.hosts[0].token("alpha"), try await fleet.hosts[1].token("alpha"), try await fleet.hosts[2].token("alpha"),
            ]
            #expect(Set(tokens).count == 3, "hosts with another key or secret served the fleet's token")
            #expect(fleet.provider.requestCount == 3)
            #expect(try await fleet.rowCount() == 2)
        }
    }

    /// The lease holder is killed (SIGKILL) in the middle of a refresh: another host takes over when the lease ends,
    /// before the token's serving time runs out.
    @Test func aKilledLeaseHolderIsReplacedBeforeTheTokenLapses() async throws {
        try await Self.withFleet(hosts: 3, instances: ["alpha"], lifetime: 8, minLead: "4s", lease: "1s") { fleet in
            let first = try #require(try await fleet.hosts[0].token("alpha"))
            let expiry = try #require(fleet.provider.trueExpiry(of: first))
            fleet.provider.setResponseDelay(milliseconds: 800)
            // The refresh comes at about 4 s: find the lease holder while its request is on the way, and kill it.
            var holder: String?
            let deadline = Deadline(10)
            while holder == nil, !deadline.passed {
                let text = try await fleet.cluster.sql(
                    "SELECT lease_holder FROM tokend_fleet WHERE length(id) = 32 AND lease_until > now()",
                    database: "tokend"
                )
                holder = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasPrefix("host-") }
                if holder == nil { try await Task.sleep(for: .milliseconds(30)) }
            }
            let index = try #require(holder.flatMap { Int($0.dropFirst("host-".count)) })
            let victim = try #require(fleet.hosts[index].process)
            kill(victim.processIdentifier, SIGKILL)
            victim.waitUntilExit()
            let survivor = fleet.hosts[(index + 1) % 3]
            try await eventually("another host refreshes", timeout: 10) {
                guard let token = try await survivor.token("alpha"), token != first else { return false }
                return true
            }
            #expect(
                Date() < expiry.addingTimeInterval(-0.5),
                "the replacement came only \(Date().timeIntervalSince(expiry)) s after expiry"
            )
            for (other, host) in fleet.hosts.enumerated() where other != index {
                #expect(try await host.token("alpha") != nil)
            }
        }
    }

    /// PostgreSQL stops for a while: every host keeps serving, falls back to its own fetches before its tokens run out
    /// and says `fleet: unreachable`; when it is back, the hosts share again (the request counts show it).
    @Test func aDatabaseOutageFallsBackAndRecovers() async throws {
        let names = ["alpha", "beta"]
        try await Self.withFleet(hosts: 3, instances: names, lifetime: 4, minLead: "2s", lease: "1s") { fleet in
            #expect(fleet.provider.requestCount == 2)
            try await fleet.cluster.stop()
            let outage = Stopwatch()
            let before = fleet.provider.requestCount
            var missing: [String] = []
            while outage.elapsed < 8 {
                for host in fleet.hosts {
                    for name in names where try await host.token(name) == nil { missing.append(name) }
                }
                try await Task.sleep(for: .milliseconds(250))
            }
            #expect(missing.isEmpty, "\(missing.count) reads found no token during the outage")
            let alone = fleet.provider.requestCount - before
            // 8 s of 4 s tokens, three hosts on their own: about 4 refreshes × 2 instances × 3 hosts.
            #expect(alone >= 3 * names.count * 2, "\(alone) requests during the outage: the hosts did not fetch on their own")
            let unreachable = try await fleet.hosts[0].get("/v1/instances").json(API.InstancesBody.self)
            #expect(
                unreachable.fleet?.state == "unreachable" && unreachable.fleet?.error != nil,
                "\(String(describing: unreachable.fleet))"
            )

            try await fleet.cluster.start()
            try await eventually("every host shares again", timeout: 30) {
                for host in fleet.hosts {
                    let body = try await host.get("/v1/instances").json(API.InstancesBody.self)
                    if body.fleet?.state != "connected" { return false }
                }
                return true
            }
            // Let the hosts' tokens converge on the fleet's, then count a few refresh cycles.
            try await Task.sleep(for: .seconds(4))
            let sharedFrom = fleet.provider.requestCount
            let shared = Stopwatch()
            try await Task.sleep(for: .seconds(8))
            let perCycle = Double(fleet.provider.requestCount - sharedFrom) / (shared.elapsed / 2.0)
            #expect(perCycle <= 1.1 * Double(names.count) + 0.5, "\(perCycle) requests per cycle after the database came back")
        }
    }

    /// A database that stops answering (SIGSTOP: connections hang, nothing errors) is as good as gone: calls time
    /// out, every host fetches alone before its tokens run out and never serves an expired one, and shares again
    /// once the database answers.
    @Test func aFrozenDatabaseNeverStallsServing() async throws {
        try await Self.withFleet(hosts: 2, instances: ["alpha"], lifetime: 4, minLead: "2s", lease: "1s") { fleet in
            fleet.cluster.freeze()
            let frozen = Stopwatch()
            var problems: [String] = []
            var states: Set<String> = []
            while frozen.elapsed < 9 {
                if frozen.elapsed > 5 {
                    states.insert(try await fleet.hosts[0].get("/v1/instances").json(API.InstancesBody.self).fleet?.state ?? "-")
                }
                for (index, host) in fleet.hosts.enumerated() {
                    let asked = Stopwatch()
                    let token = try await host.token("alpha")
                    if asked.elapsed > 1 { problems.append("host-\(index) took \(asked.elapsed) s to answer") }
                    guard let token else {
                        problems.append("host-\(index) had no token at \(frozen.elapsed) s")
                        continue
                    }
                    if let expiry = fleet.provider.trueExpiry(of: token), expiry <= Date() {
                        problems.append("host-\(index) served an expired token")
                    }
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            fleet.cluster.thaw()
            #expect(problems.isEmpty, "\(problems.prefix(10))")
            #expect(states == ["unreachable"], "\(states)")
            try await eventually("every host shares again", timeout: 30) {
                for host in fleet.hosts {
                    let body = try await host.get("/v1/instances").json(API.InstancesBody.self)
                    if body.fleet?.state != "connected" { return false }
                }
                return true
            }
        }
    }
}
