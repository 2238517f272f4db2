import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The refresh engine with the real binary, for what needs the wire: a hanging endpoint's timeout, a request during
/// start-up, the concurrency limits as the endpoint sees them.
///
/// Backoff, Retry-After, permanent failures, shared min_valid refreshes and readiness are tested without a process in
/// TokendDaemonTests.
@Suite(.serialized, .timeLimit(.minutes(3))) struct RefreshEngineEndToEndTests {
    static func settings(_ extra: String = "") -> String {
        """
        startup_timeout = "20s"
        [refresh]
        min_lead = "0s"
        min_interval = "1s"
        retry_initial = "300ms"
        retry_max = "1s"
        permanent_retry = "2s"
        \(extra)
        [http]
        timeout = "1s"
        """
    }

    func status(_ harness: DaemonHarness, _ name: String) async throws -> API.InstanceStatus? {
        try await harness.get("/v1/instances").json(API.InstancesBody.self).instances.first { $0.name == name }
    }

    @Test func aHangingEndpointTimesOutAsTransient() async throws {
        try await DaemonHarness.with(settings: Self.settings()) { harness in
            harness.endpoint.script([.hang])
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            try await eventually("a token after the hang", timeout: 10) { try await harness.token("alpha") != nil }
            let times = harness.endpoint.requests.map(\.receivedAt)
            #expect(times.count == 2)
            #expect(times[1].timeIntervalSince(times[0]) >= 1.2, "the hang was given up after \(times[1].timeIntervalSince(times[0])) s")
            #expect(harness.log.contains("oauth.error=timeout"))
            #expect(harness.log.contains("kind=transient"))
            #expect(try await harness.stop() == 0)
        }
    }

    @Test func aRequestDuringStartUpWaitsForTheFirstToken() async throws {
        try await DaemonHarness.with { harness in
            harness.endpoint.setResponseDelay(milliseconds: 1500)
            try harness.writeInstance("alpha")
            try harness.start()
            try await eventually("the socket accepts") { unixSocketAcceptsConnections(at: harness.socketPath) }
            #expect(!harness.notify.assignments.contains("READY=1"))
            let answer = try await harness.get("/v1/tokens/alpha?format=raw")
            #expect(answer.status == 200, "\(answer.body)")
            #expect(answer.body == harness.endpoint.issuedTokens.first)
            #expect(harness.endpoint.requestCount == 1)
            #expect(try await harness.stop() == 0)
        }
    }

    /// 40 instances at one endpoint that takes 200 ms per answer: each is fetched once, and `limit` requests are in
    /// flight at the busiest moment, never more (reached, not merely respected).
    ///
    /// The scale itself (10,000 instances) is `scripts/bench scale`'s, not a test's.
    func expectConcurrencyLimit(_ limits: String, binding limit: Int) async throws {
        try await DaemonHarness.with(settings: Self.settings(limits)) { harness in
            harness.endpoint.setResponseDelay(milliseconds: 200)
            let names = try harness.writeNumberedInstances(40)
            try harness.start()
            try await harness.waitUntilReady(timeout: 30)
            let requests = harness.endpoint.requests
            #expect(requests.count == names.count)
            #expect(Set(requests.compactMap { $0.clientCredentials?.id }) == Set(names))
            #expect(harness.endpoint.peakConcurrentRequests == limit, "peak \(harness.endpoint.peakConcurrentRequests) in flight")
            #expect(try await harness.get("/v1/health").status == 200)
            #expect(harness.notify.assignments.contains("STATUS=\(names.count) instances: \(names.count) valid"))
            #expect(try await harness.stop() == 0)
        }
    }

    @Test func perEndpointConcurrentBindsWhenItIsTheLowerLimit() async throws {
        try await expectConcurrencyLimit("max_concurrent = 64\nper_endpoint_concurrent = 4", binding: 4)
    }

    /// SPEC §5: `max_concurrent` limits the requests of all instances together, whatever `per_endpoint_concurrent`.
    @Test func maxConcurrentBindsWhenItIsTheLowerLimit() async throws {
        try await expectConcurrencyLimit("max_concurrent = 3\nper_endpoint_concurrent = 16", binding: 3)
    }
}
