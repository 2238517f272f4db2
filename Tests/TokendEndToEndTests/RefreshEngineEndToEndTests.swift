import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The refresh engine with the real binary against a scriptable endpoint: backoff, Retry-After, permanent
/// failures, timeouts, shared min_valid refreshes, and the concurrency limits.
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

    @Test func transientErrorsRecoverWithBackoff() async throws {
        try await DaemonHarness.with(settings: Self.settings()) { harness in
            harness.endpoint.script([
                .respond(status: 500, headers: [], body: "<html>oops</html>"),
                .respond(status: 502, headers: [], body: ""),
            ])
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            try await eventually("a token after two failures") { try await harness.token("alpha") != nil }
            let times = harness.endpoint.requests.map(\.receivedAt)
            #expect(times.count == 3)
            // Backoff: each retry waits at least retry_initial (300 ms) and, for the second, at most 2 × that.
            #expect(times[1].timeIntervalSince(times[0]) >= 0.29)
            #expect(times[2].timeIntervalSince(times[1]) >= 0.29)
            #expect(times[2].timeIntervalSince(times[1]) < 1.5)
            let after = try #require(try await status(harness, "alpha"))
            #expect(after.state == "valid")
            #expect(after.consecutive_failures == 0)
            #expect(harness.log.contains("oauth.error=http_500"))
            #expect(try await harness.stop() == 0)
        }
    }

    @Test func retryAfterIsHonoured() async throws {
        try await DaemonHarness.with(settings: Self.settings()) { harness in
            harness.endpoint.script([.respond(status: 429, headers: [.init("Retry-After", "3")], body: #"{"error":"slow_down"}"#)])
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            let early = try #require(try await status(harness, "alpha"))
            #expect(early.last_error?.code == "slow_down")
            try await eventually("a token after Retry-After", timeout: 10) { try await harness.token("alpha") != nil }
            let times = harness.endpoint.requests.map(\.receivedAt)
            #expect(times.count == 2)
            #expect(times[1].timeIntervalSince(times[0]) >= 2.95, "retried after \(times[1].timeIntervalSince(times[0])) s")
            #expect(try await harness.stop() == 0)
        }
    }

    @Test func permanentFailuresRetryOnlyEveryPermanentRetry() async throws {
        try await DaemonHarness.with(settings: Self.settings()) { harness in
            harness.endpoint.setBehavior(.respond(status: 401, headers: [], body: #"{"error":"invalid_client","error_description":"bad secret"}"#))
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            let started = Date()
            try await Task.sleep(for: .seconds(5))
            let times = harness.endpoint.requests.map(\.receivedAt)
            let window = Date().timeIntervalSince(started) + 0.5
            #expect(times.count <= 1 + Int(window / 2) + 1, "\(times.count) requests in \(window) s")
            // The first attempt and the retries at 2 s and 4 s: without them there is no gap to measure (and a
            // daemon that gave up retrying would pass).
            #expect(times.count >= 3, "\(times.count) requests in \(window) s; permanent_retry is 2 s")
            for (earlier, later) in zip(times, times.dropFirst()) {
                #expect(later.timeIntervalSince(earlier) >= 1.95, "attempts \(later.timeIntervalSince(earlier)) s apart")
            }
            let failing = try #require(try await status(harness, "alpha"))
            #expect(failing.state == "failing")
            #expect(failing.last_error?.code == "invalid_client")
            #expect(failing.last_error?.kind == "permanent")
            #expect(harness.notify.assignments.last { $0.hasPrefix("STATUS=") } == "STATUS=1 instance: 1 failing (alpha: invalid_client)")
            #expect(try await harness.stop() == 0)
        }
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

    @Test func concurrentMinValidRequestsShareOneRefresh() async throws {
        try await DaemonHarness.with(lifetime: 60, settings: Self.settings()) { harness in
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            let first = try #require(try await harness.token("alpha"))
            // Let the token age past 1 s (and min_interval pass): it then has < 54 s of serving life left.
            try await Task.sleep(for: .milliseconds(1500))
            harness.endpoint.setResponseDelay(milliseconds: 300)
            let answers = try await withThrowingTaskGroup(of: DaemonHarness.Answer.self) { group in
                for _ in 0..<50 {
                    group.addTask { try await harness.get("/v1/tokens/alpha?format=raw&min_valid=54") }
                }
                var answers: [DaemonHarness.Answer] = []
                for try await answer in group { answers.append(answer) }
                return answers
            }
            #expect(answers.allSatisfy { $0.status == 200 }, "\(answers.map(\.status))")
            #expect(Set(answers.map(\.body)).count == 1)
            #expect(answers.first?.body != first)
            #expect(harness.endpoint.requestCount == 2)
            // A min_valid no token can meet is refused rather than refreshed in a loop.
            let impossible = try await harness.get("/v1/tokens/alpha?min_valid=3600")
            #expect(impossible.status == 503)
            #expect(harness.endpoint.requestCount == 2)
            #expect(try await harness.get("/v1/tokens/alpha?min_valid=soon").status == 400)
            #expect(try await harness.stop() == 0)
        }
    }

    @Test func readyArrivesByStartupTimeoutWhileAFirstFetchHangs() async throws {
        let settings = Self.settings().replacingOccurrences(of: "startup_timeout = \"20s\"", with: "startup_timeout = \"2s\"")
            .replacingOccurrences(of: "timeout = \"1s\"", with: "timeout = \"30s\"")
        try await DaemonHarness.with(settings: settings) { harness in
            harness.endpoint.setBehavior(.hang)
            try harness.writeInstance("alpha")
            let started = Date()
            try harness.start()
            // A caller that comes before READY=1 waits for the first attempt, and gets its 503 when READY=1 comes.
            try await eventually("the socket accepts") { unixSocketAcceptsConnections(at: harness.socketPath) }
            async let early = harness.get("/v1/tokens/alpha")
            try await harness.waitUntilReady(timeout: 10)
            let waited = Date().timeIntervalSince(started)
            #expect(waited >= 1.9 && waited < 8, "READY=1 after \(waited) s")
            let assignments = harness.notify.assignments
            let extend = try #require(assignments.firstIndex { $0.hasPrefix("EXTEND_TIMEOUT_USEC=") })
            #expect(extend < assignments.firstIndex(of: "READY=1")!)
            #expect(try await early.status == 503)
            #expect(Date().timeIntervalSince(started) < 8)
            #expect(try await harness.get("/v1/tokens/alpha").status == 503)
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
    /// flight at the busiest moment, never more (reached, not merely respected). The scale itself (10,000
    /// instances) is `scripts/bench scale`'s, not a test's.
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
