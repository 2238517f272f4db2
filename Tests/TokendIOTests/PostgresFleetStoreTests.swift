import Foundation
import Logging
import Synchronization
import Testing
import TokendCore
import TokendTestSupport

@testable import TokendIO

#if canImport(Glibc)
import Glibc
#endif

/// ``PostgresFleetStore`` against a real PostgreSQL: each test gets a private cluster (``PostgresCluster``) with a
/// `fleet` database owned by `tokend`, reached over loopback TCP with a password.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct PostgresFleetStoreTests {
    static let password = "fleet-pw-Xq7!"
    static let keyCheck: [UInt8] = Array(repeating: 0x5a, count: 32)

    /// The stores a test made, shut down when it ends however it ends.
    final class Stores: Sendable {
        let cluster: PostgresCluster
        private let made = Mutex<[PostgresFleetStore]>([])

        init(_ cluster: PostgresCluster) {
            self.cluster = cluster
        }

        func make(
            timeout: Double = 2,
            password: String? = PostgresFleetStoreTests.password,
            tls: FleetDatabase.TLSMode = .disable,
            caFile: String? = nil
        ) throws -> PostgresFleetStore {
            let store = try PostgresFleetStore(
                database: cluster.fleetDatabase("fleet", user: "tokend", tls: tls),
                password: password,
                caFile: caFile,
                logger: Logger(label: "test.fleet"),
                timeout: timeout
            )
            made.withLock { $0.append(store) }
            return store
        }

        /// Two hosts' stores on a table that the first one opened.
        func twoHosts() async throws -> (PostgresFleetStore, PostgresFleetStore) {
            let first = try make()
            _ = try await first.open(keyCheck: PostgresFleetStoreTests.keyCheck)
            return (first, try make())
        }

        func shutdownAll() async {
            for store in made.withLock({ $0 }) {
                await store.shutdown()
            }
        }
    }

    /// Runs `body` with a started cluster and its `fleet` database; stops everything afterwards.
    func withFleet(_ body: (Stores) async throws -> Void) async throws {
        try await PostgresCluster.with { cluster in
            try await cluster.createDatabase("fleet", user: "tokend", password: Self.password)
            let stores = Stores(cluster)
            do {
                try await body(stores)
            } catch {
                await stores.shutdownAll()
                throw error
            }
            await stores.shutdownAll()
        }
    }

    static func identity(_ seed: UInt8) -> [UInt8] {
        (0..<32).map { UInt8(truncatingIfNeeded: Int(seed) &* 31 &+ $0) }
    }

    /// Waits up to `seconds` for `condition`, checking every 20 ms.
    func eventually(_ what: String, within seconds: Double = 5, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out after \(seconds) s waiting for: \(what)")
    }

    /// What a listener heard.
    final class Heard: Sendable {
        let changed = Mutex<[[UInt8]]>([])
        let lost = Mutex<[String]>([])

        func listen(on store: PostgresFleetStore) async throws {
            try await store.listen(
                changed: { identity in self.changed.withLock { $0.append(identity) } },
                lost: { error in self.lost.withLock { $0.append("\(error)") } }
            )
        }
    }

    // MARK: - Opening

    @Test func openCreatesTheTableAndIsIdempotentForEveryHost() async throws {
        try await withFleet { stores in
            let first = try stores.make()
            #expect(try await first.open(keyCheck: Self.keyCheck) == .ready)
            #expect(try await first.open(keyCheck: Self.keyCheck) == .ready)
            let second = try stores.make()
            #expect(try await second.open(keyCheck: Self.keyCheck) == .ready)
            let reserved = try await stores.cluster.sql(
                "SELECT count(*), max(generation), encode(string_agg(sealed, ''::bytea), 'hex') FROM tokend_fleet",
                database: "fleet"
            )
            #expect(reserved == "1|1|" + PostgresFleetStore.hex(Self.keyCheck))
            // The reserved row is never a fleet row.
            #expect(try await first.read([[0]]).isEmpty)
        }
    }

    @Test func theTableHasNoPlaintextColumn() async throws {
        try await withFleet { stores in
            let store = try stores.make()
            _ = try await store.open(keyCheck: Self.keyCheck)
            let columns = try await stores.cluster.sql(
                "SELECT column_name || ':' || data_type FROM information_schema.columns WHERE table_name = 'tokend_fleet'",
                database: "fleet"
            )
            let expected: Set<String> = [
                "id:bytea", "generation:bigint", "sealed:bytea", "obtained_at:timestamp with time zone",
                "expires_at:timestamp with time zone", "fetched_by:text", "lease_holder:text",
                "lease_until:timestamp with time zone", "updated_at:timestamp with time zone",
            ]
            #expect(Set(columns.split(separator: "\n").map(String.init)) == expected)
        }
    }

    @Test func hostsThatStartTogetherAllOpenTheTable() async throws {
        try await withFleet { stores in
            let hosts = try (0..<6).map { _ in try stores.make() }
            let openings = try await withThrowingTaskGroup(of: FleetOpening.self) { group in
                for host in hosts {
                    group.addTask { try await host.open(keyCheck: Self.keyCheck) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(openings == Array(repeating: .ready, count: 6))
        }
    }

    @Test func anotherKeyIsAMismatch() async throws {
        try await withFleet { stores in
            let first = try stores.make()
            let other = try stores.make()
            #expect(try await first.open(keyCheck: Self.keyCheck) == .ready)
            #expect(try await other.open(keyCheck: Array(repeating: 0x01, count: 32)) == .keyMismatch)
            #expect(try await other.open(keyCheck: Self.keyCheck) == .ready)
        }
    }

    @Test func aNewerSchemaIsReportedAndAnOlderOneMigrated() async throws {
        try await withFleet { stores in
            let store = try stores.make()
            #expect(try await store.open(keyCheck: Self.keyCheck) == .ready)
            let reserved = "UPDATE tokend_fleet SET generation = %d WHERE id = decode('00', 'hex')"
            try await stores.cluster.sql(String(format: reserved, 7), database: "fleet")
            #expect(try await store.open(keyCheck: Self.keyCheck) == .schemaTooNew(found: 7, known: 1))
            try await stores.cluster.sql(String(format: reserved, 0), database: "fleet")
            #expect(try await store.open(keyCheck: Self.keyCheck) == .ready)
            let version = try await stores.cluster.sql(
                "SELECT generation FROM tokend_fleet WHERE id = decode('00', 'hex')",
                database: "fleet"
            )
            #expect(version == "1")
        }
    }

    // MARK: - Leases

    @Test func aLeaseIsGrantedOnceRenewedByItsHolderAndRefusedToOthers() async throws {
        try await withFleet { stores in
            let (a, b) = try await stores.twoHosts()
            let id = Self.identity(1)
            #expect(try await a.lease(id, holder: "host-a", expecting: 0, for: 20) == .granted(generation: 0))
            guard case .refused(let row) = try await b.lease(id, holder: "host-b", expecting: 0, for: 20) else {
                Issue.record("host-b got the lease host-a holds")
                return
            }
            #expect(row.identity == id)
            #expect(row.generation == 0)
            #expect(row.leaseHolder == "host-a")
            let left = try #require(row.leaseLeft)
            #expect(left > 15 && left <= 20)
            #expect(try await a.lease(id, holder: "host-a", expecting: 0, for: 20) == .granted(generation: 0))
            // Expecting a generation the row is not at is refused, even for the holder.
            guard case .refused(let moved) = try await a.lease(id, holder: "host-a", expecting: 3, for: 20) else {
                Issue.record("a lease at the wrong generation was granted")
                return
            }
            #expect(moved.generation == 0)
            // A released lease is free for the next host.
            try await a.release(id, holder: "host-b")
            guard case .refused = try await b.lease(id, holder: "host-b", expecting: 0, for: 20) else {
                Issue.record("release by a non-holder ended the lease")
                return
            }
            try await a.release(id, holder: "host-a")
            #expect(try await b.lease(id, holder: "host-b", expecting: 0, for: 20) == .granted(generation: 0))
        }
    }

    @Test func aLapsedLeaseByTheDatabaseClockGoesToTheNextHost() async throws {
        try await withFleet { stores in
            let (a, b) = try await stores.twoHosts()
            let id = Self.identity(2)
            #expect(try await a.lease(id, holder: "host-a", expecting: 0, for: 0.3) == .granted(generation: 0))
            guard case .refused = try await b.lease(id, holder: "host-b", expecting: 0, for: 20) else {
                Issue.record("host-b got a live lease")
                return
            }
            try await Task.sleep(for: .milliseconds(400))
            #expect(try await b.lease(id, holder: "host-b", expecting: 0, for: 20) == .granted(generation: 0))
            // A lapsed lease is not shown as held.
            try await Task.sleep(for: .milliseconds(10))
            let rows = try await a.read([id])
            #expect(rows.first?.leaseHolder == "host-b")
        }
    }

    @Test func eightHostsRacingForOneRowGetOneLease() async throws {
        try await withFleet { stores in
            let hosts = try (0..<8).map { _ in try stores.make() }
            _ = try await hosts[0].open(keyCheck: Self.keyCheck)
            for round in 0..<5 {
                let id = Self.identity(UInt8(100 + round))
                // Round 0..2 race for a row that does not exist; 3..4 for one at generation 1.
                var generation: Int64 = 0
                if round >= 3 {
                    #expect(try await hosts[0].lease(id, holder: "seed", expecting: 0, for: 20) == .granted(generation: 0))
                    generation = try #require(
                        try await hosts[0].publish(id, holder: "seed", generation: 0, sealed: [1], obtainedAt: Date(), expiresAt: Date())
                    )
                }
                let expecting = generation
                let outcomes = try await withThrowingTaskGroup(of: FleetLease.self) { group in
                    for (index, host) in hosts.enumerated() {
                        group.addTask { try await host.lease(id, holder: "host-\(index)", expecting: expecting, for: 20) }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                let granted = outcomes.filter { if case .granted = $0 { return true } else { return false } }
                #expect(granted == [.granted(generation: expecting)], "round \(round): \(outcomes)")
            }
        }
    }

    // MARK: - Publishing

    @Test func theHolderPublishesTheNextGenerationAndOthersWriteNothing() async throws {
        try await withFleet { stores in
            let (a, b) = try await stores.twoHosts()
            let id = Self.identity(3)
            let sealed: [UInt8] = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let obtained = Date(timeIntervalSince1970: 1_800_000_000.25)
            let expires = obtained.addingTimeInterval(3600)
            #expect(try await a.lease(id, holder: "host-a", expecting: 0, for: 20) == .granted(generation: 0))
            #expect(try await b.publish(id, holder: "host-b", generation: 0, sealed: [9], obtainedAt: obtained, expiresAt: expires) == nil)
            #expect(try await a.publish(id, holder: "host-a", generation: 0, sealed: sealed, obtainedAt: obtained, expiresAt: expires) == 1)
            let row = try #require(try await b.read([id, Self.identity(99)]).first)
            #expect(row.generation == 1)
            #expect(row.sealed == sealed)
            #expect(row.fetchedBy == "host-a")
            #expect(row.leaseHolder == nil && row.leaseLeft == nil)
            #expect(abs((row.obtainedAt ?? .distantPast).timeIntervalSince(obtained)) < 0.001)
            #expect(abs((row.expiresAt ?? .distantPast).timeIntervalSince(expires)) < 0.001)
            // The lease ended with the write: publishing again, or at the old generation, writes nothing.
            #expect(try await a.publish(id, holder: "host-a", generation: 1, sealed: [9], obtainedAt: obtained, expiresAt: expires) == nil)
            #expect(try await b.lease(id, holder: "host-b", expecting: 1, for: 20) == .granted(generation: 1))
            #expect(try await a.publish(id, holder: "host-b", generation: 0, sealed: [9], obtainedAt: obtained, expiresAt: expires) == nil)
            #expect(try await a.read([id]).first?.sealed == sealed)
            guard case .refused(let moved) = try await a.lease(id, holder: "host-a", expecting: 0, for: 20) else {
                Issue.record("a lease at a generation that moved on was granted")
                return
            }
            #expect(moved.generation == 1 && moved.sealed == sealed)
        }
    }

    @Test func aPublishAfterTheLeaseLapsedWritesNothing() async throws {
        try await withFleet { stores in
            let a = try stores.make()
            _ = try await a.open(keyCheck: Self.keyCheck)
            let id = Self.identity(4)
            #expect(try await a.lease(id, holder: "host-a", expecting: 0, for: 0.2) == .granted(generation: 0))
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await a.publish(id, holder: "host-a", generation: 0, sealed: [1], obtainedAt: Date(), expiresAt: Date()) == nil)
            #expect(try await a.read([id]).first?.generation == 0)
        }
    }

    // MARK: - Listening

    @Test func anotherHostHearsEachPublish() async throws {
        try await withFleet { stores in
            let (a, b) = try await stores.twoHosts()
            let heard = Heard()
            try await heard.listen(on: b)
            let id = Self.identity(5)
            #expect(try await a.lease(id, holder: "host-a", expecting: 0, for: 20) == .granted(generation: 0))
            // A lease is not a write: nothing is heard until the publish.
            #expect(try await a.publish(id, holder: "host-a", generation: 0, sealed: [7], obtainedAt: Date(), expiresAt: Date()) == 1)
            try await eventually("host-b hears the publish") { heard.changed.withLock { !$0.isEmpty } }
            #expect(heard.changed.withLock { $0 } == [id])
            // A publish that wrote nothing sends nothing.
            #expect(try await a.publish(id, holder: "host-a", generation: 0, sealed: [7], obtainedAt: Date(), expiresAt: Date()) == nil)
            try await Task.sleep(for: .milliseconds(200))
            #expect(heard.changed.withLock { $0 } == [id])
            #expect(heard.lost.withLock { $0 }.isEmpty)
        }
    }

    @Test func theListenerIsLostWhenTheServerStopsAndNotOnShutdown() async throws {
        try await withFleet { stores in
            let quiet = Heard()
            let leaving = try stores.make()
            try await quiet.listen(on: leaving)
            await leaving.shutdown()
            let heard = Heard()
            let b = try stores.make()
            try await heard.listen(on: b)
            try await stores.cluster.stop()
            try await eventually("lost is called") { heard.lost.withLock { !$0.isEmpty } }
            try await Task.sleep(for: .milliseconds(100))
            let lost = heard.lost.withLock { $0 }
            #expect(lost.count == 1)
            #expect(lost.first?.contains("tokend@127.0.0.1:\(stores.cluster.port)/fleet: listen failed") == true, "\(lost)")
            #expect(quiet.lost.withLock { $0 }.isEmpty)
        }
    }

    // MARK: - Failures

    @Test func everyCallFailsPromptlyWhenTheServerIsDown() async throws {
        try await withFleet { stores in
            let store = try stores.make(timeout: 1)
            _ = try await store.open(keyCheck: Self.keyCheck)
            try await stores.cluster.stop()
            try await expectEveryCallFails(store, within: 1.5, saying: "failed")
        }
    }

    @Test func everyCallFailsWithinTheTimeoutWhenTheServerDoesNotAnswer() async throws {
        try await withFleet { stores in
            let store = try stores.make(timeout: 1)
            let idle = try stores.make(timeout: 1)
            _ = try await store.open(keyCheck: Self.keyCheck)
            // One store with an idle open connection (its query hangs), one that must connect (nothing answers).
            _ = try await idle.read([Self.identity(1)])
            stores.cluster.freeze()
            defer { stores.cluster.thaw() }
            try await expectEveryCallFails(store, within: 1.6, saying: "no answer within 1 s")
            try await expectEveryCallFails(idle, within: 1.6, saying: "no answer within 1 s")
            stores.cluster.thaw()
            #expect(try await idle.read([Self.identity(1)]).isEmpty)
            #expect(try await store.open(keyCheck: Self.keyCheck) == .ready)
        }
    }

    func expectEveryCallFails(_ store: PostgresFleetStore, within limit: Double, saying words: String) async throws {
        let id = Self.identity(6)
        let calls: [(String, @Sendable () async throws -> Void)] = [
            ("open", { _ = try await store.open(keyCheck: Self.keyCheck) }),
            ("read", { _ = try await store.read([id]) }),
            ("lease", { _ = try await store.lease(id, holder: "h", expecting: 0, for: 5) }),
            (
                "publish",
                { _ = try await store.publish(id, holder: "h", generation: 0, sealed: [1], obtainedAt: Date(), expiresAt: Date()) }
            ),
            ("release", { try await store.release(id, holder: "h") }),
            ("listen", { try await store.listen(changed: { _ in }, lost: { _ in }) }),
        ]
        for (name, call) in calls {
            let started = ContinuousClock.now
            do {
                try await call()
                Issue.record("\(name) succeeded with the server down")
            } catch {
                let text = "\(error)"
                #expect(text.hasPrefix("fleet database tokend@127.0.0.1:"), "\(name): \(text)")
                #expect(text.contains("\(name) failed"), "\(name): \(text)")
                #expect(text.contains(words), "\(name): \(text)")
                #expect(!text.contains("\n"), "\(name): \(text)")
            }
            let elapsed = started.duration(to: .now)
            #expect(elapsed < .milliseconds(Int(limit * 1000)), "\(name) took \(elapsed)")
        }
    }

    @Test func aWrongPasswordFailsWithoutShowingIt() async throws {
        try await withFleet { stores in
            let wrong = "not-the-Pw-81357"
            let store = try stores.make(password: wrong)
            do {
                _ = try await store.open(keyCheck: Self.keyCheck)
                Issue.record("a wrong password was accepted")
            } catch {
                let text = "\(error)"
                #expect(text.contains("password authentication failed"), "\(text)")
                #expect(text.contains("tokend@127.0.0.1:\(stores.cluster.port)/fleet: open failed"), "\(text)")
                #expect(!text.contains(wrong))
                #expect(!String(reflecting: error).contains(wrong))
            }
            let right = try stores.make()
            #expect(try await right.open(keyCheck: Self.keyCheck) == .ready)
        }
    }

    @Test func theUnixSocketWorksWithoutAPassword() async throws {
        try await withFleet { stores in
            let store = try PostgresFleetStore(
                database: stores.cluster.fleetDatabase("fleet", user: "tokend", overTCP: false),
                password: nil,
                logger: Logger(label: "test.fleet")
            )
            defer { Task { await store.shutdown() } }
            #expect(try await store.open(keyCheck: Self.keyCheck) == .ready)
            await store.shutdown()
        }
    }

    @Test func shutdownClosesEveryConnectionAndLaterCallsFail() async throws {
        try await withFleet { stores in
            let store = try stores.make()
            _ = try await store.open(keyCheck: Self.keyCheck)
            let heard = Heard()
            try await heard.listen(on: store)
            let count = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'tokend'"
            #expect(try await stores.cluster.sql(count) == "2")
            await store.shutdown()
            try await eventually("the server sees no tokend session") { try await stores.cluster.sql(count) == "0" }
            await #expect(throws: PostgresFleetError.self) { try await store.read([Self.identity(1)]) }
            #expect(heard.lost.withLock { $0 }.isEmpty)
        }
    }

    @Test func tlsChecksTheServerAsTheModeSays() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        try await withFleet { stores in
            try stores.cluster.enableTLS(certificateFile: pki.serverCertificate, keyFile: pki.serverKey)
            try await stores.cluster.restart()
            let full = try stores.make(tls: .verifyFull, caFile: pki.caCertificate)
            #expect(try await full.open(keyCheck: Self.keyCheck) == .ready)
            let encrypted = try await stores.cluster.sql(
                "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE usename = 'tokend'"
            )
            #expect(encrypted == "t")
            #expect(try await stores.make(tls: .verifyCA, caFile: pki.caCertificate).open(keyCheck: Self.keyCheck) == .ready)
            #expect(try await stores.make(tls: .require).open(keyCheck: Self.keyCheck) == .ready)
            try await expectTLSRefused(stores.make(tls: .verifyFull, caFile: pki.otherCACertificate))
            try await expectTLSRefused(stores.make(tls: .verifyCA, caFile: pki.otherCACertificate))
            // A certificate from the right CA for another name: verify-ca takes it, verify-full does not.
            try stores.cluster.enableTLS(certificateFile: pki.wrongHostCertificate, keyFile: pki.wrongHostKey)
            try await stores.cluster.restart()
            #expect(try await stores.make(tls: .verifyCA, caFile: pki.caCertificate).open(keyCheck: Self.keyCheck) == .ready)
            try await expectTLSRefused(stores.make(tls: .verifyFull, caFile: pki.caCertificate))
        }
    }

    func expectTLSRefused(_ store: PostgresFleetStore) async throws {
        do {
            _ = try await store.open(keyCheck: Self.keyCheck)
            Issue.record("a server that should fail verification was accepted")
        } catch {
            #expect("\(error)".contains("open failed: "), "\(error)")
            #expect("\(error)".contains("TLS") || "\(error)".contains("certificate"), "\(error)")
        }
    }

    @Test func hexPayloadsRoundTrip() {
        let id = Self.identity(9)
        #expect(PostgresFleetStore.bytes(hex: PostgresFleetStore.hex(id)) == id)
        #expect(PostgresFleetStore.hex([0x00, 0xab, 0x7f]) == "00ab7f")
        #expect(PostgresFleetStore.bytes(hex: "0g") == nil)
        #expect(PostgresFleetStore.bytes(hex: "abc") == nil)
    }
}
