import Foundation
import Testing
import TokendCore
import TokendIO
import TokendTestSupport

@testable import TokendDaemon

/// When the daemon asks for tokens: refresh points, jitter, backoff, Retry-After, permanent failures.
@Suite struct RefreshSchedulingTests {
    /// Request times, in seconds since the daemon started, recorded by the endpoint twin.
    final class Times: @unchecked Sendable {
        private let lock = NSLock()
        private var list: [Double] = []
        func append(_ time: Double) { lock.withLock { list.append(time) } }
        var all: [Double] { lock.withLock { list } }
        var gaps: [Double] { zip(all.dropFirst(), all).map { $0 - $1 } }
    }

    @Test func tokensAreRefreshedAtTheRefreshPointAndServedAtOnce() {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100))
        )
        daemon.start()
        #expect(daemon.endpoint.requests.count == 1)
        #expect(daemon.servedToken("alpha") == "t1")
        // ratio 0.5, no jitter: the refresh is due 50 s after the token was obtained, not a moment earlier.
        daemon.advance(by: 49.9)
        #expect(daemon.endpoint.requests.count == 1)
        daemon.advance(by: 0.2)
        #expect(daemon.endpoint.requests.count == 2)
        #expect(daemon.servedToken("alpha") == "t2")
        // The new token was stored in the cache with the request's fingerprint.
        #expect(daemon.cache.record("alpha")?.token.accessToken.revealed == "t2")
        daemon.advance(by: 50.05)
        #expect(daemon.endpoint.requests.count == 3)
    }

    @Test func jitterSpreadsRefreshesOverTheWindow() throws {
        let settings = exactSettings.replacingOccurrences(of: "jitter = 0.0", with: "jitter = 0.2")
        let names = (1...40).map { "i\($0)" }
        let daemon = TestDaemon(
            settings: settings,
            instances: Dictionary(uniqueKeysWithValues: names.map { ($0, instanceFile($0)) }),
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100))
        )
        daemon.start()
        let start = daemon.clock.now()
        let due = try names.map { try #require(daemon.machine($0)?.nextAttempt).timeIntervalSince(start) }
        // base 50 s, lead 50 s, jitter 0.2: each within 50 ± 10 s, and not all the same.
        #expect(due.allSatisfy { (40...60).contains($0) }, "\(due)")
        #expect(Set(due.map { Int($0) }).count > 5)
    }

    @Test func transientFailuresBackOffExponentiallyUpToRetryMax() {
        let times = Times()
        let clock = ManualClock()
        let start = clock.now()
        let endpoint = ManualTokenEndpoint { _, _ in
            times.append(clock.now().timeIntervalSince(start))
            return ManualTokenEndpoint.error(status: 503, code: "temporarily_unavailable")
        }
        let daemon = TestDaemon(instances: ["alpha": instanceFile("alpha")], endpoint: endpoint, clock: clock)
        daemon.start()
        daemon.advance(by: 120)
        let gaps = times.gaps
        // retry_initial 1 s, retry_max 8 s: failure n waits between 1 s and min(8, 2^(n-1)) s.
        #expect(gaps.count >= 14, "\(times.all)")
        for (index, gap) in gaps.enumerated() {
            let ceiling = min(8, pow(2, Double(index)))
            #expect(gap >= 1 - 0.001 && gap <= ceiling + 0.011, "gap \(index + 1): \(gap) s")
        }
        #expect(gaps.suffix(5).contains { $0 > 4 }, "the backoff reached its later steps: \(gaps)")
        #expect(daemon.machine("alpha")?.state(at: clock.now()) == .failing)
    }

    @Test func retryAfterIsHonouredOverTheBackoff() {
        let endpoint = ManualTokenEndpoint { _, number in
            number == 1
                ? ManualTokenEndpoint.error(status: 429, code: "slow_down", retryAfter: "30")
                : ManualTokenEndpoint.token("t\(number)", expiresIn: 100)
        }
        let daemon = TestDaemon(instances: ["alpha": instanceFile("alpha")], endpoint: endpoint)
        daemon.start()
        daemon.advance(by: 29.9)
        #expect(daemon.endpoint.requests.count == 1)
        daemon.advance(by: 0.2)
        #expect(daemon.endpoint.requests.count == 2)
        #expect(daemon.servedToken("alpha") == "t2")
    }

    @Test func permanentFailuresWaitPermanentRetry() {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint { _, _ in ManualTokenEndpoint.error(status: 401, code: "invalid_client") }
        )
        daemon.start()
        daemon.advance(by: 599)
        #expect(daemon.endpoint.requests.count == 1)
        daemon.advance(by: 1.1)
        #expect(daemon.endpoint.requests.count == 2)
        #expect(daemon.machine("alpha")?.lastFailure?.code == "invalid_client")
    }

    @Test func aFailedRefreshKeepsServingTheValidToken() {
        let endpoint = ManualTokenEndpoint { _, number in
            number == 1 ? ManualTokenEndpoint.token("t1", expiresIn: 100) : ManualTokenEndpoint.error(status: 500, code: "server_error")
        }
        let daemon = TestDaemon(instances: ["alpha": instanceFile("alpha")], endpoint: endpoint)
        daemon.start()
        daemon.advance(by: 94.9)
        #expect(daemon.endpoint.requests.count > 5)
        #expect(daemon.servedToken("alpha") == "t1")
        #expect(daemon.machine("alpha")?.state(at: daemon.clock.now()) == .degraded)
        // Never past its serving time (expiry less 5 s): then it is no longer served.
        daemon.advance(by: 0.2)
        #expect(daemon.servedToken("alpha") == nil)
        // The provider recovers: the next retry (at most retry_max later) brings a token again.
        daemon.endpoint.respond(with: numberedTokens(expiresIn: 100))
        daemon.advance(by: 8.1)
        #expect(daemon.servedToken("alpha")?.hasPrefix("t") == true)
        #expect(daemon.machine("alpha")?.state(at: daemon.clock.now()) == .valid)
    }
}
