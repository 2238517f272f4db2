import Foundation
import Testing
import TokendTestSupport

@testable import TokendCore

/// The refresh rules of SPEC §6 as tables over the pure state machine and policy, with a manual clock (plain
/// `Date` values) and seeded randomness.
@Suite struct RefreshEngineTests {
    static func policy(_ change: (inout RefreshSettings) -> Void = { _ in }) -> RefreshPolicy {
        var settings = RefreshSettings()
        change(&settings)
        return RefreshPolicy(settings)
    }

    /// (lifetime, ratio, min_lead, min_interval) → refresh point with no jitter.
    @Test(arguments: [
        (3600.0, 0.75, 60.0, 30.0, 2700.0),
        (3600.0, 0.5, 60.0, 30.0, 1800.0),
        (3600.0, 0.99, 60.0, 30.0, 3540.0),
        (600.0, 0.75, 300.0, 30.0, 300.0),
        (90.0, 0.75, 60.0, 30.0, 30.0),
        (86_400.0, 0.75, 60.0, 30.0, 64_800.0),
        (1.0, 0.75, 60.0, 30.0, 30.0),
    ])
    func refreshPoints(_ lifetime: Double, _ ratio: Double, _ minLead: Double, _ minInterval: Double, _ expected: Double) {
        let policy = Self.policy {
            $0.ratio = ratio
            $0.minLead = minLead
            $0.minInterval = minInterval
            $0.jitter = 0
        }
        let window = policy.refreshWindow(for: token(lifetime: lifetime))
        #expect(window.lowerBound == window.upperBound)
        #expect(abs(window.lowerBound.timeIntervalSince(epoch) - expected) < 0.001)
    }

    @Test(arguments: [1, 2, 3, 5, 8, 13, 21, 34, 55, 89] as [UInt64])
    func jitterStaysWithinTenPercentOfTheLeadForEverySeed(_ seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        let policy = Self.policy()
        for _ in 0..<200 {
            let offset = policy.refreshTime(for: token(lifetime: 3600), using: &generator).timeIntervalSince(epoch)
            #expect(offset >= 2700 - 90 && offset <= 2700 + 90)
        }
    }

    @Test func serverRefreshInHintReplacesTheRatio() {
        var hinted = token(lifetime: 3600)
        hinted.refreshIn = 600
        let window = Self.policy { $0.jitter = 0 }.refreshWindow(for: hinted)
        #expect(window.lowerBound == epoch.addingTimeInterval(600))
        let parsed = TokenResponseParser.parse(
            status: 200,
            body: Array(#"{"access_token":"a","expires_in":3600,"refresh_in":900}"#.utf8),
            shape: .init(),
            now: epoch
        )
        #expect((try? parsed.get())?.refreshIn == 900)
    }

    /// `min_interval` guards tiny and absent lifetimes: 0 is an invalid response (retried with backoff), 1 s is
    /// refreshed no sooner than min_interval, absent fails permanently (no loop).
    @Test(
        arguments: [
            (#"{"access_token":"a","expires_in":0}"#, "invalid_response", 1.0),
            (#"{"access_token":"a","expires_in":1}"#, nil, 30.0),
            (#"{"access_token":"a"}"#, "no_lifetime", 600.0),
        ] as [(String, String?, Double)]
    )
    func tinyAndAbsentLifetimes(_ body: String, _ failureCode: String?, _ nextAttemptAfter: Double) {
        var generator = SeededGenerator(seed: 1)
        var machine = InstanceStateMachine(policy: Self.policy { $0.jitter = 0 })
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        let actions: [InstanceStateMachine.Action]
        switch TokenResponseParser.parse(status: 200, body: Array(body.utf8), shape: .init(), now: epoch) {
        case .success(let issued):
            #expect(failureCode == nil)
            actions = machine.receivedAndStored(issued, using: &generator)
        case .failure(let failure):
            #expect(failure.code == failureCode)
            actions = machine.fetchFailed(failure, now: epoch, using: &generator)
        }
        #expect(actions.contains(.scheduleRefresh(at: epoch.addingTimeInterval(nextAttemptAfter))))
    }

    @Test func retryAfterAsADateDelaysTheNextAttempt() {
        var generator = SeededGenerator(seed: 2)
        var machine = InstanceStateMachine(policy: Self.policy())
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        guard
            case .failure(let failure) = TokenResponseParser.parse(
                status: 503,
                body: [],
                retryAfter: "Fri, 15 Jan 2027 08:02:00 GMT",
                shape: .init(),
                now: epoch
            )
        else {
            Issue.record("expected a failure")
            return
        }
        _ = machine.fetchFailed(failure, now: epoch, using: &generator)
        #expect(machine.nextAttempt == epoch.addingTimeInterval(120))
        #expect(machine.timerFired(now: epoch.addingTimeInterval(119)) == [])
    }

    @Test func minValidServesJoinsOrStartsOneSharedRefresh() {
        var generator = SeededGenerator(seed: 3)
        var machine = InstanceStateMachine(policy: Self.policy())
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        let first = token(lifetime: 600)
        _ = machine.receivedAndStored(first, using: &generator)

        // Good enough: served without a fetch.
        let now = epoch.addingTimeInterval(100)
        #expect(machine.tokenRequested(minValid: 400, now: now) == (.serve(first), []))
        // Not good enough: the first caller starts the refresh, the next ones join it.
        let (answer, actions) = machine.tokenRequested(minValid: 550, now: now)
        #expect(answer == .wait)
        #expect(actions == [.fetch])
        for _ in 0..<49 {
            let (joined, more) = machine.tokenRequested(minValid: 550, now: now)
            #expect(joined == .wait)
            #expect(more.isEmpty)
        }
        let second = token(obtained: now, lifetime: 600, value: "second")
        let done = machine.receivedAndStored(second, using: &generator)
        #expect(done.contains(.serveWaiters(second)))
        // Right after a refresh, min_interval keeps clients from forcing another one.
        let (refused, none) = machine.tokenRequested(minValid: 599, now: now.addingTimeInterval(1))
        guard case .reject = refused else {
            Issue.record("expected a refusal, got \(refused)")
            return
        }
        #expect(none.isEmpty)
    }

    @Test func aFailedSharedRefreshRejectsItsWaiters() {
        var generator = SeededGenerator(seed: 4)
        var machine = InstanceStateMachine(policy: Self.policy())
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        #expect(machine.tokenRequested(minValid: 0, now: epoch).answer == .wait)
        let failure = FetchFailure.network("refused")
        #expect(machine.fetchFailed(failure, now: epoch, using: &generator).contains(.rejectWaiters(failure)))
    }

    @Test(arguments: [-7200.0, -30.0, 45.0, 3600.0])
    func clockStepsMoveEveryTimeWithTheClock(_ step: Double) {
        var generator = SeededGenerator(seed: 5)
        var machine = InstanceStateMachine(policy: Self.policy { $0.jitter = 0 })
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        _ = machine.receivedAndStored(token(lifetime: 3600), using: &generator)
        let actions = machine.clockStepped(by: step)
        #expect(actions == [.scheduleRefresh(at: epoch.addingTimeInterval(2700 + step))])
        // 100 s of real time later the wall clock reads epoch + step + 100: the token has 3495 s of serving left,
        // whichever way the clock was stepped.
        let later = epoch.addingTimeInterval(step + 100)
        #expect(machine.outageBudget(at: later) == 3495)
        #expect(machine.servableToken(at: epoch.addingTimeInterval(step + 3594)) != nil)
        #expect(machine.servableToken(at: epoch.addingTimeInterval(step + 3595)) == nil)
    }

    @Test func aCachedTokenIssuedInTheFutureIsRefreshed() {
        var generator = SeededGenerator(seed: 6)
        var machine = InstanceStateMachine(policy: Self.policy())
        let future = token(obtained: epoch.addingTimeInterval(120), lifetime: 3600)
        #expect(machine.started(cached: future, now: epoch, using: &generator) == [.fetch])
    }

    /// A 100 s token (servable until 95 s) whose refresh at 75 s keeps failing: backoff steps of 15, 30, 60, 120 s …
    /// would wait past the token; each retry is pulled in to the moment it stops being servable, never later.
    @Test func transientRetriesNeverWaitPastTheServableToken() {
        var generator = SeededGenerator(seed: 7)
        var machine = InstanceStateMachine(
            policy: Self.policy {
                $0.retryInitial = 15
                $0.retryMax = 600
            }
        )
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        _ = machine.receivedAndStored(token(lifetime: 100), using: &generator)
        let now = epoch.addingTimeInterval(75)
        let serveUntil = epoch.addingTimeInterval(95)
        _ = machine.timerFired(now: now)
        var pulledIn = 0
        for failure in 1...6 {
            _ = machine.fetchFailed(.network("down"), now: now, using: &generator)
            guard let due = machine.nextAttempt else {
                Issue.record("failure \(failure): no retry scheduled")
                return
            }
            #expect(due <= serveUntil, "failure \(failure): retry \(due.timeIntervalSince(epoch)) s, the token is gone at 95 s")
            #expect(due >= now.addingTimeInterval(15), "failure \(failure): retry sooner than retry_initial")
            if due == serveUntil { pulledIn += 1 }
            _ = machine.refreshRequested(now: now)
        }
        // Backoff windows of up to 480 s: most draws lie past 95 s, so the rule was exercised, not just met.
        #expect(pulledIn >= 3, "only \(pulledIn) of 6 retries needed pulling in")
    }

    /// When less of the token is left than `retry_initial`, the retry still waits `retry_initial` (the provider is
    /// not hammered to save a token about to go): the one case where a retry comes after the token is gone.
    @Test func aRetryNeverComesSoonerThanRetryInitialEvenWhenTheTokenGoesFirst() {
        var generator = SeededGenerator(seed: 7)
        var machine = InstanceStateMachine(
            policy: Self.policy {
                $0.retryInitial = 60
                $0.retryMax = 600
            }
        )
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        _ = machine.receivedAndStored(token(lifetime: 100), using: &generator)
        let now = epoch.addingTimeInterval(75)
        _ = machine.timerFired(now: now)
        for _ in 0..<3 {
            _ = machine.fetchFailed(.network("down"), now: now, using: &generator)
            #expect(machine.nextAttempt == now.addingTimeInterval(60))
            _ = machine.refreshRequested(now: now)
        }
    }
}
