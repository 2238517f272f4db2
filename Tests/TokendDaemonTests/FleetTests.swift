import Foundation
import Synchronization
import Testing
import TokendCore
import TokendIO
import TokendTestSupport

@testable import TokendDaemon

/// Fleet mode (SPEC §14) with in-memory twins: several daemons in one process share one store, one manual clock and
/// count their provider requests; no database, no sleeps.
@Suite struct FleetSchedulingTests {
    static let key = Data((0..<32).map { UInt8($0) }).base64EncodedString()
    static let otherKey = Data((0..<32).map { UInt8(200 - $0) }).base64EncodedString()

    /// Refresh at half the lifetime, no jitter (all hosts come due at once: the worst case for the lease), a 5 s lease.
    static func settings(host: String) -> String {
        """
        startup_timeout = "30s"
        [refresh]
        ratio = 0.5
        min_lead = "20s"
        min_interval = "1s"
        jitter = 0.0
        retry_initial = "1s"
        retry_max = "8s"
        [fleet]
        database = "postgresql://tokend@/tokend?host=/run/postgresql"
        key = { credential = "fleet-key" }
        host_id = "\(host)"
        lease = "5s"
        """
    }

    /// Numbers the tokens of every host's provider.
    final class Issued: Sendable {
        private let count = Mutex(0)

        func next() -> Int {
            count.withLock {
                $0 += 1
                return $0
            }
        }
    }

    /// Hosts sharing one store and one clock; every provider request gets a new token, numbered fleet-wide.
    final class Fleet: @unchecked Sendable {
        let clock = ManualClock()
        let store: InMemoryFleetStore
        let issued = Issued()
        var hosts: [TestDaemon] = []

        init(
            hosts names: [String],
            instances: [String],
            lifetime: Int = 100,
            keys: [String: String] = [:],
            files: [String: String] = [:]
        ) throws {
            let clock = clock
            store = InMemoryFleetStore { clock.bootSeconds() }
            for name in names {
                let codec = try FleetCodec.parse(key: keys[name] ?? FleetSchedulingTests.key).get()
                let issued = issued
                let endpoint = ManualTokenEndpoint { _, _ in
                    let number = issued.next()
                    return ManualTokenEndpoint.token("t\(number)", expiresIn: lifetime)
                }
                hosts.append(
                    TestDaemon(
                        settings: FleetSchedulingTests.settings(host: name),
                        instances: Dictionary(uniqueKeysWithValues: instances.map { ($0, files[$0] ?? instanceFile($0)) }),
                        endpoint: endpoint,
                        clock: clock,
                        fleet: FleetAdapter(store: store.host(), codec: codec, hostID: name)
                    )
                )
            }
            let hosts = hosts
            clock.afterEachTimer {
                for _ in 0..<3 { for host in hosts { host.scheduler.settle() } }
            }
        }

        func start() async {
            for host in hosts { await host.startInFleet() }
            settle()
        }

        func settle() {
            for _ in 0..<3 { for host in hosts { host.settle() } }
        }

        func advance(by seconds: Double) {
            clock.advance(by: seconds)
            settle()
        }

        /// Provider requests, all hosts together.
        var requests: Int { hosts.reduce(0) { $0 + $1.endpoint.requests.count } }
    }

    @Test func threeHostsAskTheProviderOncePerInstanceAndRefresh() async throws {
        let names = (1...5).map { "i\($0)" }
        let fleet = try Fleet(hosts: ["a", "b", "c"], instances: names)
        await fleet.start()
        // The first host fetched; the others took its tokens.
        #expect(fleet.requests == names.count)
        for name in names {
            let served = Set(fleet.hosts.map { $0.servedToken(name) })
            #expect(served.count == 1 && served.first! != nil, "\(name): \(served)")
        }
        // Five lifetimes, every host due at the same moment (no jitter): one request per instance per refresh.
        var lastServed: [String: String?] = [:]
        for cycle in 1...5 {
            fleet.advance(by: 50.5)
            #expect(fleet.requests <= names.count * (cycle + 1), "cycle \(cycle): \(fleet.requests) requests")
            for name in names {
                let served = Set(fleet.hosts.map { $0.servedToken(name) })
                #expect(served.count == 1 && served.first! != nil, "cycle \(cycle), \(name): \(served)")
                #expect(served.first! != lastServed[name] ?? nil, "cycle \(cycle), \(name): not refreshed")
                lastServed[name] = served.first!
            }
        }
        #expect(fleet.requests == names.count * 6)
        #expect(fleet.store.allRows.count == names.count)
        // `/v1/instances` says where each token came from.
        let roles = fleet.hosts.map { $0.scheduler.published.fleetRole(named: "i1") ?? "-" }
        #expect(roles.count { $0 == "fetched here" } == 1, "\(roles)")
        #expect(roles.count { $0.hasPrefix("from ") } == 2, "\(roles)")
    }

    /// A start-up reads the rows of all its instances with a few queries, and a host's own writes, heard back from
    /// the database, cost no read.
    @Test func aStartReadsRowsTogetherAndOwnWritesCostNoRead() async throws {
        let names = (1...600).map { "i\($0)" }
        let fleet = try Fleet(hosts: ["a"], instances: names)
        await fleet.start()
        #expect(fleet.requests == names.count)
        #expect(fleet.store.calls("read") == 3, "600 rows in batches of 250")
        #expect(fleet.store.calls("lease") == names.count)
        #expect(fleet.store.calls("publish") == names.count)
        let second = TestDaemon(
            settings: Self.settings(host: "b"),
            instances: Dictionary(uniqueKeysWithValues: names.map { ($0, instanceFile($0)) }),
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100)),
            clock: fleet.clock,
            fleet: FleetAdapter(store: fleet.store.host(), codec: try FleetCodec.parse(key: Self.key).get(), hostID: "b")
        )
        await second.startInFleet()
        #expect(second.endpoint.requests.isEmpty, "a host joining took every token from the fleet")
        #expect(fleet.store.calls("read") == 6)
        #expect(names.allSatisfy { second.servedToken($0) == fleet.hosts[0].servedToken($0) })
    }

    @Test func oneHostsInvalidationMakesOneRequestAndEveryHostServesTheReplacement() async throws {
        let fleet = try Fleet(hosts: ["a", "b", "c"], instances: ["alpha"])
        await fleet.start()
        let first = try #require(fleet.hosts[0].servedToken("alpha"))
        fleet.advance(by: 2)
        let fingerprint = TokenFingerprint.of(Secret(first))
        let answer = fleet.hosts[1].ask { .invalidationWanted(name: "alpha", fingerprint: fingerprint, reply: $0) }
        fleet.settle()
        #expect(answer.status == 202)
        #expect(fleet.requests == 2)
        let replacement = try #require(fleet.hosts[1].servedToken("alpha"))
        #expect(replacement != first)
        for host in fleet.hosts { #expect(host.servedToken("alpha") == replacement) }
        // Another host's client, still holding the refused token, is told it was already replaced.
        let late = fleet.hosts[2].ask { .invalidationWanted(name: "alpha", fingerprint: fingerprint, reply: $0) }
        #expect(late.status == 200)
        #expect(fleet.requests == 2)
    }

    /// Two hosts invalidate the same token before either heard of the other: the compare-and-swap on the generation
    /// gives the lease to one; the other waits, takes the replacement and answers as for a stale fingerprint.
    @Test func racingInvalidationsFetchOnce() async throws {
        let fleet = try Fleet(hosts: ["a", "b"], instances: ["alpha"])
        // The first host's replacement fetch is held, so both invalidations meet the row while the lease is out.
        await fleet.start()
        let first = try #require(fleet.hosts[0].servedToken("alpha"))
        fleet.advance(by: 2)
        fleet.hosts[0].endpoint.respond { _, _ in nil }
        let fingerprint = TokenFingerprint.of(Secret(first))
        let answerA = fleet.hosts[0].ask { .invalidationWanted(name: "alpha", fingerprint: fingerprint, reply: $0) }
        let answerB = fleet.hosts[1].ask { .invalidationWanted(name: "alpha", fingerprint: fingerprint, reply: $0) }
        fleet.settle()
        #expect(answerA.status == 202)
        #expect(answerB.status == nil, "answered before the fleet decided")
        fleet.hosts[0].endpoint.complete(with: ManualTokenEndpoint.token("replacement", expiresIn: 100))
        fleet.settle()
        #expect(answerB.status == 200)
        #expect(fleet.requests == 2)
        #expect(fleet.hosts.allSatisfy { $0.servedToken("alpha") == "replacement" })
    }

    @Test func aLeaseHolderThatDiesIsReplacedBeforeTheTokenLapses() async throws {
        let fleet = try Fleet(hosts: ["a", "b"], instances: ["alpha"])
        await fleet.start()
        // At the refresh point one host takes the lease and never answers (killed mid-refresh); the other waits.
        for host in fleet.hosts { host.endpoint.respond { _, _ in nil } }
        fleet.advance(by: 50.0)
        let held = fleet.hosts.map(\.endpoint.heldCount)
        #expect(held.sorted() == [0, 1], "\(held)")
        let survivor = try #require(fleet.hosts.first { $0.endpoint.heldCount == 0 })
        survivor.endpoint.respond { _, _ in ManualTokenEndpoint.token("replacement", expiresIn: 100) }
        fleet.advance(by: 5.0)
        #expect(survivor.endpoint.requests.isEmpty, "the lease was taken over before it ran out")
        // The 5 s lease runs out; the survivor takes it and fetches, long before the token expires at 100 s.
        fleet.advance(by: 0.5)
        #expect(survivor.endpoint.requests.count == 1)
        #expect(survivor.servedToken("alpha") == "replacement")
        #expect(fleet.store.allRows.first?.fetchedBy == survivor.scheduler.adapters.fleet?.hostID)
    }

    @Test func anUnreachableDatabaseMeansEachHostFetchesAloneThenSharesAgain() async throws {
        let names = ["alpha", "beta"]
        let fleet = try Fleet(hosts: ["a", "b", "c"], instances: names)
        await fleet.start()
        #expect(fleet.requests == 2)
        fleet.store.isReachable = false
        fleet.settle()
        for host in fleet.hosts { #expect(host.scheduler.queue.sync { host.scheduler.fleetHealth } != .connected) }
        fleet.advance(by: 50.5)
        // Each host refreshed on its own; every host still serves.
        #expect(fleet.requests == 2 + 3 * names.count)
        for host in fleet.hosts { for name in names { #expect(host.servedToken(name) != nil) } }
        let status = fleet.hosts[0].notifier.statuses.last ?? ""
        #expect(status.contains("fleet: unreachable"), "\(status)")
        let published = fleet.hosts[0].scheduler.published.fleet
        #expect(
            published?.state == "unreachable" && published?.error?.contains("connection refused") == true,
            "\(String(describing: published))"
        )
        #expect(fleet.hosts[0].scheduler.published.fleetRole(named: "alpha") == "alone")
        // Back: within the 10 s reconnect, and the next refresh is shared again.
        fleet.store.isReachable = true
        fleet.advance(by: 10.5)
        for host in fleet.hosts { #expect(host.scheduler.queue.sync { host.scheduler.fleetHealth } == .connected) }
        let before = fleet.requests
        fleet.advance(by: 50)
        #expect(fleet.requests - before <= names.count + 1, "\(fleet.requests - before) requests after the database came back")
        for name in names {
            #expect(Set(fleet.hosts.map { $0.servedToken(name) }).count == 1)
        }
    }

    /// A database too slow for one call (the listener still up): the host runs alone until the reconnect, which
    /// does not add a second listener.
    @Test func aSlowCallFallsBackAndTheReconnectKeepsOneListener() async throws {
        let fleet = try Fleet(hosts: ["a", "b"], instances: ["alpha"])
        await fleet.start()
        #expect(fleet.store.listenerCount == 2)
        fleet.store.failCalls(1)
        fleet.advance(by: 50.5)
        let health = fleet.hosts.map { host in host.scheduler.queue.sync { host.scheduler.fleetHealth } }
        #expect(health.contains { if case .unreachable = $0 { true } else { false } }, "\(health)")
        fleet.advance(by: 10.5)
        for host in fleet.hosts { #expect(host.scheduler.queue.sync { host.scheduler.fleetHealth } == .connected) }
        #expect(fleet.store.listenerCount == 2)
        for host in fleet.hosts { #expect(host.servedToken("alpha") != nil) }
    }

    @Test func aHostWithAnotherKeyRunsAloneAndNeverServesARowItCannotOpen() async throws {
        let fleet = try Fleet(hosts: ["a", "b"], instances: ["alpha"], keys: ["b": Self.otherKey])
        await fleet.start()
        let b = fleet.hosts[1]
        #expect(b.scheduler.queue.sync { b.scheduler.fleetHealth } == .keyMismatch)
        #expect(fleet.requests == 2)
        #expect(fleet.hosts[0].servedToken("alpha") != b.servedToken("alpha"))
        let status = b.notifier.statuses.last ?? ""
        #expect(status.contains("fleet: key mismatch"), "\(status)")
    }

    @Test func aHostSendingAnotherRequestOrAnUnsharedInstanceDoesNotShareTheRow() async throws {
        let fleet = try Fleet(hosts: ["a"], instances: ["alpha", "beta"], files: ["beta": "shared = false\n" + instanceFile("beta")])
        await fleet.start()
        #expect(fleet.store.allRows.count == 1)
        // Another host whose alpha sends another client id (another request): its own row.
        let other = TestDaemon(
            settings: Self.settings(host: "b"),
            instances: ["alpha": instanceFile("alpha").replacingOccurrences(of: "client_id = \"alpha\"", with: "client_id = \"alpha-b\"")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100)),
            clock: fleet.clock,
            fleet: FleetAdapter(store: fleet.store.host(), codec: try FleetCodec.parse(key: Self.key).get(), hostID: "b")
        )
        await other.startInFleet()
        #expect(other.endpoint.requests.count == 1)
        #expect(fleet.store.allRows.count == 2)
    }
}
