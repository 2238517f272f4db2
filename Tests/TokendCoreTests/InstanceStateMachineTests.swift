import Foundation
import Testing
import TokendTestSupport

@testable import TokendCore

@Suite struct InstanceStateMachineTests {
    var generator = SeededGenerator(seed: 11)
    var settings: RefreshSettings = {
        var settings = RefreshSettings()
        settings.jitter = 0
        return settings
    }()

    @Test mutating func withoutACacheItFetchesAtOnce() {
        var machine = InstanceStateMachine(policy: RefreshPolicy(settings))
        #expect(machine.started(cached: nil, now: epoch, using: &generator) == [.fetch])
        #expect(machine.isFetching)
        #expect(machine.state(at: epoch) == .pending)
        #expect(!machine.hasSettled)
    }

    @Test mutating func aValidCachedTokenIsServedWithoutAFetch() {
        var machine = InstanceStateMachine(policy: RefreshPolicy(settings))
        let cached = token(obtained: epoch.addingTimeInterval(-600), lifetime: 3600)
        let actions = machine.started(cached: cached, now: epoch, using: &generator)
        #expect(actions == [.scheduleRefresh(at: epoch.addingTimeInterval(2100))])
        #expect(machine.servableToken(at: epoch) == cached)
        #expect(machine.hasSettled)
    }

    @Test mutating func aCachedTokenPastItsRefreshPointIsServedAndRefreshed() {
        var machine = InstanceStateMachine(policy: RefreshPolicy(settings))
        let cached = token(obtained: epoch.addingTimeInterval(-3000), lifetime: 3600)
        #expect(machine.started(cached: cached, now: epoch, using: &generator) == [.fetch])
        #expect(machine.servableToken(at: epoch) == cached)
    }

    @Test mutating func anExpiredCachedTokenIsNotServed() {
        var machine = InstanceStateMachine(policy: RefreshPolicy(settings))
        let cached = token(obtained: epoch.addingTimeInterval(-3600), lifetime: 3600)
        #expect(machine.started(cached: cached, now: epoch, using: &generator) == [.fetch])
        #expect(machine.servableToken(at: epoch) == nil)
    }

    @Test mutating func aReceivedTokenIsStoredAndScheduled() {
        var machine = InstanceStateMachine(policy: RefreshPolicy(settings))
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        let issued = token(lifetime: 3600)
        // Stored first; until the write is durable the token is neither served nor handed on, and the fetch is still
        // the one in flight (a client that wants a token joins it).
        #expect(machine.tokenReceived(issued) == [.store(issued)])
        #expect(machine.servableToken(at: epoch) == nil)
        #expect(machine.tokenRequested(minValid: 0, now: epoch).answer == .wait)
        #expect(machine.refreshRequested(now: epoch) == [])
        #expect(machine.tokenStored(fingerprint: "0123456789abcdef", using: &generator) == [])
        let actions = machine.tokenStored(fingerprint: issued.fingerprint, using: &generator)
        #expect(actions == [.deliver(issued), .scheduleRefresh(at: epoch.addingTimeInterval(2700)), .serveWaiters(issued)])
        #expect(machine.state(at: epoch) == .valid)
        #expect(machine.outageBudget(at: epoch) == 3595)
        #expect(machine.timerFired(now: epoch.addingTimeInterval(2699)) == [])
        #expect(machine.timerFired(now: epoch.addingTimeInterval(2700)) == [.fetch])
    }

    /// Issue 18, finding 6: a reader looping on `invalidate` gets at most one accepted invalidation (and one fetch)
    /// per `min_interval`, and never a stretch without a token while no replacement is being fetched.
    @Test mutating func invalidationIsAcceptedOnlyWhenTheReplacementCanBeFetched() {
        settings.minInterval = 30
        var machine = InstanceStateMachine(policy: RefreshPolicy(settings))
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        let first = token(lifetime: 3600, value: "one")
        _ = machine.receivedAndStored(first, using: &generator)
        let soon = epoch.addingTimeInterval(10)
        let early = machine.tokenInvalidated(fingerprint: first.fingerprint, now: soon)
        #expect(early.outcome == .tooSoon(retryAt: epoch.addingTimeInterval(30)) && early.actions == [])
        #expect(machine.servableToken(at: soon) == first)
        let later = epoch.addingTimeInterval(31)
        let accepted = machine.tokenInvalidated(fingerprint: first.fingerprint, now: later)
        #expect(accepted.outcome == .accepted && accepted.actions == [.fetch])
        #expect(machine.servableToken(at: later) == nil && machine.isReplacingInvalidated)
        let second = token(obtained: later, lifetime: 3600, value: "two")
        _ = machine.receivedAndStored(second, using: &generator)
        #expect(!machine.isReplacingInvalidated)
        let again = machine.tokenInvalidated(fingerprint: second.fingerprint, now: later.addingTimeInterval(1))
        #expect(again.outcome == .tooSoon(retryAt: later.addingTimeInterval(30)))
        #expect(machine.tokenInvalidated(fingerprint: first.fingerprint, now: later.addingTimeInterval(40)).outcome == .notCurrent)
        #expect(machine.servableToken(at: later.addingTimeInterval(40)) == second)
    }

    @Test mutating func onlyOneFetchIsEverInFlight() {
        var machine = InstanceStateMachine(policy: RefreshPolicy(settings))
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        #expect(machine.refreshRequested(now: epoch) == [])
        #expect(machine.timerFired(now: epoch.addingTimeInterval(10_000)) == [])
    }

    @Test mutating func failureKeepsServingUntilExpiryThenFails() {
        var machine = InstanceStateMachine(policy: RefreshPolicy(settings))
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        let issued = token(lifetime: 100)
        _ = machine.receivedAndStored(issued, using: &generator)
        let later = epoch.addingTimeInterval(75)
        #expect(machine.timerFired(now: later) == [.fetch])
        let failure = FetchFailure.network("connection refused")
        let actions = machine.fetchFailed(failure, now: later, using: &generator)
        guard case .scheduleRefresh(let retry)? = actions.first else {
            Issue.record("expected a retry")
            return
        }
        #expect(retry.timeIntervalSince(later) == 1)
        #expect(machine.state(at: later) == .degraded)
        #expect(machine.servableToken(at: epoch.addingTimeInterval(94.99)) == issued)
        #expect(machine.servableToken(at: epoch.addingTimeInterval(95)) == nil)
        #expect(machine.state(at: epoch.addingTimeInterval(95)) == .failing)
        #expect(machine.outageBudget(at: epoch.addingTimeInterval(95)) == 0)
        #expect(machine.consecutiveFailures == 1)
        #expect(machine.lastFailure == failure)
    }

    @Test mutating func successAfterFailuresResetsTheCount() {
        var machine = InstanceStateMachine(policy: RefreshPolicy(settings))
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        _ = machine.fetchFailed(.network("x"), now: epoch, using: &generator)
        _ = machine.refreshRequested(now: epoch)
        _ = machine.fetchFailed(.network("x"), now: epoch, using: &generator)
        #expect(machine.consecutiveFailures == 2)
        #expect(machine.hasSettled)
        #expect(machine.state(at: epoch) == .failing)
        _ = machine.refreshRequested(now: epoch)
        _ = machine.receivedAndStored(token(lifetime: 60), using: &generator)
        #expect(machine.consecutiveFailures == 0)
        #expect(machine.lastFailure == nil)
        #expect(machine.state(at: epoch) == .valid)
    }
}
