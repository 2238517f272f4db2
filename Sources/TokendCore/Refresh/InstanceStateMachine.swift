import Foundation

/// One instance's token lifecycle as a pure state machine: events in, actions out, `now` and randomness passed in.
///
/// The daemon feeds it events on its scheduler queue and performs the actions it returns; nothing here does I/O.
/// At most one fetch is in flight (single flight): a due timer while fetching does nothing.
public struct InstanceStateMachine: Sendable {
    /// What the daemon must do next.
    public enum Action: Sendable, Hashable {
        /// Start a token request now.
        case fetch
        /// Wake this instance at the given time.
        case scheduleRefresh(at: Date)
        /// Persist this token to the cache.
        case store(IssuedToken)
    }

    /// How the instance looks from outside.
    public enum State: String, Sendable, Hashable {
        /// No token yet and no attempt finished.
        case pending
        /// A servable token, no trouble.
        case valid
        /// A servable token, but the last refresh attempt failed.
        case degraded
        /// No servable token and the last attempt failed.
        case failing
        /// The token expired and no failure has been seen since (e.g. a refresh is still in flight).
        case expired
    }

    public private(set) var policy: RefreshPolicy
    public private(set) var token: IssuedToken?
    public private(set) var isFetching = false
    public private(set) var consecutiveFailures = 0
    public private(set) var lastFailure: FetchFailure?
    public private(set) var nextAttempt: Date?
    /// True once the instance has a token or one attempt has finished; readiness waits for this.
    public private(set) var hasSettled = false

    public init(policy: RefreshPolicy) {
        self.policy = policy
    }

    /// The instance starts, with the cached token if one matched its fingerprint.
    public mutating func started(
        cached: IssuedToken?,
        now: Date,
        using generator: inout some RandomNumberGenerator
    ) -> [Action] {
        if let cached, cached.isServable(at: now) {
            token = cached
            hasSettled = true
            let due = policy.refreshTime(for: cached, using: &generator)
            if due > now {
                nextAttempt = due
                return [.scheduleRefresh(at: due)]
            }
        }
        return beginFetch()
    }

    /// The refresh settings changed (a reload); the current schedule stays, later decisions use the new policy.
    public mutating func policyChanged(_ newPolicy: RefreshPolicy) {
        policy = newPolicy
    }

    /// A scheduled time came; fetches when the instance is due and nothing is in flight.
    public mutating func timerFired(now: Date) -> [Action] {
        guard !isFetching, let due = nextAttempt, due <= now else { return [] }
        return beginFetch()
    }

    /// Asks for a refresh now (an operator or a client), joining one already in flight.
    public mutating func refreshRequested() -> [Action] {
        isFetching ? [] : beginFetch()
    }

    /// The endpoint issued a token.
    public mutating func tokenReceived(
        _ received: IssuedToken,
        now: Date,
        using generator: inout some RandomNumberGenerator
    ) -> [Action] {
        isFetching = false
        hasSettled = true
        token = received
        consecutiveFailures = 0
        lastFailure = nil
        let due = policy.refreshTime(for: received, using: &generator)
        nextAttempt = due
        return [.store(received), .scheduleRefresh(at: due)]
    }

    /// The fetch failed; the current token (if still valid) keeps being served.
    public mutating func fetchFailed(
        _ failure: FetchFailure,
        now: Date,
        using generator: inout some RandomNumberGenerator
    ) -> [Action] {
        isFetching = false
        hasSettled = true
        consecutiveFailures += 1
        lastFailure = failure
        let delay = policy.retryDelay(after: failure, consecutiveFailures: consecutiveFailures, using: &generator)
        let due = now.addingTimeInterval(delay)
        nextAttempt = due
        return [.scheduleRefresh(at: due)]
    }

    /// The token that may be served at `now`, if any.
    public func servableToken(at now: Date) -> IssuedToken? {
        guard let token, token.isServable(at: now) else { return nil }
        return token
    }

    public func state(at now: Date) -> State {
        let servable = servableToken(at: now) != nil
        switch (servable, lastFailure) {
        case (true, nil): return .valid
        case (true, _?): return .degraded
        case (false, _?): return .failing
        case (false, nil): return token == nil ? .pending : .expired
        }
    }

    /// How long the provider may stay down before the served token expires (0 when none is servable).
    public func outageBudget(at now: Date) -> Double {
        guard let token = servableToken(at: now) else { return 0 }
        return max(0, token.serveUntil.timeIntervalSince(now))
    }

    private mutating func beginFetch() -> [Action] {
        isFetching = true
        nextAttempt = nil
        return [.fetch]
    }
}
