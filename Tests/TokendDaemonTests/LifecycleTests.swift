import Foundation
import Testing
import TokendCore
import TokendIO
import TokendTestSupport

@testable import TokendDaemon

/// Readiness, STATUS=, the watchdog, clock steps, the cache at start and the order of shutdown.
@Suite struct LifecycleTests {
    @Test func readyWaitsForEveryFirstAttemptAndAsksForMoreTime() {
        let daemon = TestDaemon(instances: ["alpha": instanceFile("alpha"), "beta": instanceFile("beta")])
        daemon.start()
        #expect(daemon.endpoint.heldCount == 2)
        #expect(daemon.notifier.count(of: .ready) == 0)
        daemon.advance(by: 0)
        #expect(daemon.notifier.count(of: .extendTimeout(microseconds: 15_000_000)) == 1)
        daemon.advance(by: 10)
        #expect(daemon.notifier.count(of: .extendTimeout(microseconds: 15_000_000)) == 3)
        daemon.endpoint.complete(with: ManualTokenEndpoint.token("a", expiresIn: 100))
        daemon.settle()
        #expect(daemon.notifier.count(of: .ready) == 0)
        // A failed first attempt settles an instance too.
        daemon.endpoint.complete(with: ManualTokenEndpoint.error(status: 401, code: "invalid_client"))
        daemon.settle()
        #expect(daemon.notifier.count(of: .ready) == 1)
        let ready = daemon.notifier.datagrams.first { $0.contains(.ready) }
        #expect(ready?.contains(.status("2 instances: 1 valid, 1 failing (beta: invalid_client)")) == true)
        // No more extensions once ready.
        daemon.advance(by: 10)
        #expect(daemon.notifier.count(of: .extendTimeout(microseconds: 15_000_000)) == 3)
    }

    @Test func startupTimeoutSendsReadyAndReleasesStartupWaiters() {
        let daemon = TestDaemon(instances: ["alpha": instanceFile("alpha")])
        daemon.start()
        let waiting = daemon.wantToken("alpha", minValid: 0)
        #expect(waiting.all.isEmpty)
        daemon.advance(by: 19.9)
        // The waiter's own deadline (the request timeout, 20 s) comes before startup_timeout (30 s).
        daemon.advance(by: 0.2)
        #expect(waiting.status == 503)
        let second = daemon.wantToken("alpha", minValid: 0)
        daemon.advance(by: 10)
        #expect(daemon.notifier.count(of: .ready) == 1)
        #expect(second.status == 503)
        #expect(second.body.contains("no valid token yet"))
    }

    @Test func statusIsCoalescedAndNamesTheFirstFailingInstance() {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha"), "beta": instanceFile("beta"), "gamma": instanceFile("gamma")],
            endpoint: ManualTokenEndpoint { request, _ in
                request.url.contains("/alpha/")
                    ? ManualTokenEndpoint.token("a", expiresIn: 100) : ManualTokenEndpoint.error(status: 400, code: "invalid_scope")
            }
        )
        daemon.start()
        daemon.advance(by: 0.2)
        #expect(daemon.notifier.statuses.last == "3 instances: 1 valid, 2 failing (beta: invalid_scope)")
        // Expiry changes the state without a fetch.
        daemon.endpoint.respond { _, _ in ManualTokenEndpoint.error(status: 503, code: "temporarily_unavailable") }
        daemon.advance(by: 101)
        #expect(daemon.notifier.statuses.last == "3 instances: 3 failing (alpha: temporarily_unavailable)")
    }

    @Test func watchdogPingsComeFromTheSchedulerQueueAndStopWhenItStalls() {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 1000)),
            watchdogInterval: 5
        )
        daemon.start()
        daemon.advance(by: 20)
        #expect(daemon.notifier.count(of: .watchdog) == 5)  // at 0, 5, 10, 15 and 20 s
        // The queue stalls: time goes on, no ping is sent while it is blocked.
        let release = DispatchSemaphore(value: 0)
        daemon.scheduler.queue.async { release.wait() }
        daemon.clock.advance(by: 30, wait: false)
        #expect(daemon.notifier.count(of: .watchdog) == 5)
        release.signal()
        daemon.settle()
        #expect(daemon.notifier.count(of: .watchdog) == 11)
    }

    @Test func aWallClockStepMovesEveryTimeWithIt() throws {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100))
        )
        daemon.start()
        let before = try #require(daemon.machine("alpha")?.token)
        daemon.clock.stepWall(by: 3600)
        daemon.advance(by: 10)  // the clock watch runs every 10 s
        let after = try #require(daemon.machine("alpha")?.token)
        #expect(after.expiresAt.timeIntervalSince(before.expiresAt) == 3600)
        #expect(daemon.servedToken("alpha") == "t1")
        // The refresh still comes 50 s after the token was obtained, in real time.
        daemon.advance(by: 39.9)
        #expect(daemon.endpoint.requests.count == 1)
        daemon.advance(by: 0.2)
        #expect(daemon.endpoint.requests.count == 2)
    }

    @Test func aCachedTokenIsServedWhenItsDefinitionMatchesAndDroppedWhenItChanged() throws {
        let clock = ManualClock()
        let first = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100)),
            clock: clock
        )
        first.start()
        let record = try #require(first.cache.record("alpha"))
        // Same definition: served from the cache at once, no request.
        let same = TestDaemon(instances: ["alpha": instanceFile("alpha")], cache: InMemoryTokenCache(records: [record]), clock: clock)
        same.start()
        #expect(same.endpoint.requests.isEmpty)
        #expect(same.servedToken("alpha") == "t1")
        #expect(same.notifier.count(of: .ready) == 1)
        // Another scope: a new request, and the cached token is never served.
        let changed = TestDaemon(
            instances: ["alpha": instanceFile("alpha", variables: #"scope = "more""#)],
            cache: InMemoryTokenCache(records: [record]),
            clock: clock
        )
        changed.start()
        #expect(changed.endpoint.requests.count == 1)
        #expect(changed.servedToken("alpha") == nil)
    }

    @Test func shutdownAnswersWaitersEndsStreamsThenStopsTheClientAndFlushesTheCache() async {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100))
        )
        daemon.start()
        daemon.endpoint.respond { _, _ in nil }
        daemon.advance(by: 2)  // past min_interval
        let waiting = daemon.wantToken("alpha", minValid: 200)
        let stream = RecordingEventStream()
        daemon.scheduler.send(.watchWanted(name: "alpha", peer: nil) { stream })
        daemon.settle()
        let order = Order()
        daemon.scheduler.closeServer = { order.add("server closed") }
        let status = await daemon.scheduler.stop(signal: "SIGTERM")
        #expect(status == 0)
        #expect(daemon.notifier.datagrams.last == [.stopping, .status("stopping")])
        #expect(waiting.status == 503)
        #expect(waiting.body.contains("stopping"))
        #expect(!stream.isOpen)
        #expect(order.all == ["server closed"])
        #expect(daemon.endpoint.isShutDown)
        #expect(daemon.cache.record("alpha")?.token.accessToken.revealed == "t1")
        // Nothing runs after the stop: no timer is left armed, no fetch starts.
        #expect(daemon.clock.armedTimers <= 1)
        daemon.advance(by: 1000)
        #expect(daemon.endpoint.requests.count == 2)
    }

    final class Order: @unchecked Sendable {
        private let lock = NSLock()
        private var list: [String] = []
        func add(_ item: String) { lock.withLock { list.append(item) } }
        var all: [String] { lock.withLock { list } }
    }
}
