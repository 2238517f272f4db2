import Foundation

/// One instance's token lifecycle as a pure state machine: events in, actions out, `now` and randomness passed in.
///
/// The daemon feeds it events on its scheduler queue and performs the actions it returns; nothing here does I/O.
/// At most one fetch is in flight (single flight): a due timer, a refresh request or a `min_valid` request while
/// fetching joins the fetch instead of starting another.
public struct InstanceStateMachine: Sendable {
    /// What the daemon must do next.
    public enum Action: Sendable, Hashable {
        /// Start a token request now.
        case fetch
        /// Wake this instance at the given time.
        case scheduleRefresh(at: Date)
        /// Persist this token to the cache; ``InstanceStateMachine/tokenStored(fingerprint:using:)`` follows once the
        /// write is durable.
        case store(IssuedToken)
        /// The token is durable and now the one served: hand it to the sink and the watch streams.
        case deliver(IssuedToken)
        /// Answer the requests waiting for this refresh (each checks its own `min_valid`).
        case serveWaiters(IssuedToken)
        /// Fail the requests waiting for this refresh.
        case rejectWaiters(FetchFailure)
    }

    /// The answer to a client that asked for a token valid for at least some time.
    public enum Answer: Sendable, Hashable {
        /// Serve this token now.
        case serve(IssuedToken)
        /// Wait for the refresh in flight (started or joined); ``Action/serveWaiters(_:)`` or
        /// ``Action/rejectWaiters(_:)`` will follow.
        case wait
        /// No token can be served; the reason is for the client, and `retryAt` is when asking again may help (the
        /// next attempt, or the end of `min_interval`).
        case reject(reason: String, retryAt: Date?)
    }

    /// What a client's invalidation did.
    public enum Invalidation: Sendable, Hashable {
        /// The token is dropped and its replacement is being fetched.
        case accepted
        /// The fingerprint is not the current token's (already replaced, or never served): nothing changed.
        case notCurrent
        /// A fetch started less than `min_interval` ago: nothing changed; asking again helps at `retryAt`.
        case tooSoon(retryAt: Date)
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
    /// When the last fetch started: `min_interval` counts from here for fetches clients ask for.
    public private(set) var lastFetchStarted: Date?
    /// True once the instance has a token or one attempt has finished; readiness waits for this.
    public private(set) var hasSettled = false
    /// A token the endpoint issued whose cache write is not durable yet: it is not served (nor handed to a sink or a
    /// watch stream) before it is, and the fetch counts as in flight until then.
    public private(set) var pendingToken: IssuedToken?
    /// True from an accepted invalidation until the refresh it started ends: plain reads wait for the replacement
    /// instead of being told there is no token.
    public private(set) var isReplacingInvalidated = false
    /// A problem with an input (SPEC §11: `input_unreadable`, `dependency_failed`) that does not stop the instance
    /// but is reported as its last error while it lasts.
    public private(set) var inputProblem: FetchFailure?
    /// When the fetch before the current one started: a fetch that could not start for want of an input gives its
    /// start back, so that `min_interval` does not delay the fetch the input's first token allows.
    private var previousFetchStarted: Date?

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
            // A token "issued in the future" means the clock was wrong at some point: refresh it.
            if due > now && cached.obtainedAt <= now.addingTimeInterval(60) {
                nextAttempt = due
                return [.scheduleRefresh(at: due)]
            }
        }
        return beginFetch(now: now)
    }

    /// A scheduled time came; fetches when the instance is due and nothing is in flight.
    public mutating func timerFired(now: Date) -> [Action] {
        guard !isFetching, let due = nextAttempt, due <= now else { return [] }
        return beginFetch(now: now)
    }

    /// Asks for a refresh now (an operator), joining one already in flight.
    public mutating func refreshRequested(now: Date) -> [Action] {
        isFetching ? [] : beginFetch(now: now)
    }

    /// A client wants a token valid for at least `minValid` seconds.
    ///
    /// Serves the current one when it is good enough; otherwise starts or joins one shared refresh, unless one started
    /// less than `min_interval` ago (the provider is not hammered on clients' behalf).
    public mutating func tokenRequested(minValid: Double, now: Date) -> (answer: Answer, actions: [Action]) {
        if let token = servableToken(at: now), token.serveUntil.timeIntervalSince(now) >= minValid {
            return (.serve(token), [])
        }
        if isFetching {
            return (.wait, [])
        }
        let noToken = lastFailure.map { "no valid token: \($0.message)" } ?? "no valid token yet"
        // A permanent failure is retried only every `permanent_retry`: a client cannot make it sooner.
        if let failure = lastFailure, failure.kind == .permanent, let next = nextAttempt, next > now {
            let reason = token == nil ? noToken : "no token valid for \(Int(minValid)) s; the last refresh failed: \(failure.message)"
            return (.reject(reason: reason, retryAt: next), [])
        }
        if let started = lastFetchStarted, now.timeIntervalSince(started) < policy.settings.minInterval {
            let reason = token == nil ? noToken : "no token valid for \(Int(minValid)) s; the last refresh was less than min_interval ago"
            return (.reject(reason: reason, retryAt: started.addingTimeInterval(policy.settings.minInterval)), [])
        }
        return (.wait, beginFetch(now: now))
    }

    /// A client got a 401 with the token whose fingerprint it names (compare-and-swap): when that is still the current
    /// token and a fetch may start now (or one is in flight), the token is no longer served and its replacement is
    /// fetched; a stale fingerprint, or one less than `min_interval` after the last fetch started, changes nothing.
    public mutating func tokenInvalidated(fingerprint: String, now: Date) -> (outcome: Invalidation, actions: [Action]) {
        guard let current = token, current.fingerprint == fingerprint else { return (.notCurrent, []) }
        // Accepted only when the replacement can be fetched now: a client looping on invalidation gets one fetch per
        // `min_interval` and never a stretch with no token, and readers wait for the replacement meanwhile.
        if !isFetching, let started = lastFetchStarted, now >= started, now.timeIntervalSince(started) < policy.settings.minInterval {
            return (.tooSoon(retryAt: started.addingTimeInterval(policy.settings.minInterval)), [])
        }
        token = nil
        isReplacingInvalidated = true
        return (.accepted, isFetching ? [] : beginFetch(now: now))
    }

    /// The endpoint issued a token: it is stored first, and served once ``tokenStored(fingerprint:using:)`` says the
    /// write is durable (a token handed out and then lost in a crash would make the restarted daemon ask for
    /// another, and some providers revoke the previous token when they issue one).
    public mutating func tokenReceived(_ received: IssuedToken) -> [Action] {
        pendingToken = received
        return [.store(received)]
    }

    /// The cache write of the received token with `fingerprint` is done (durable, or failed and reported): the token
    /// becomes the one served and the next refresh is scheduled.
    public mutating func tokenStored(fingerprint: String, using generator: inout some RandomNumberGenerator) -> [Action] {
        guard let received = pendingToken, received.fingerprint == fingerprint else { return [] }
        pendingToken = nil
        isFetching = false
        isReplacingInvalidated = false
        hasSettled = true
        token = received
        consecutiveFailures = 0
        lastFailure = nil
        let due = policy.refreshTime(for: received, using: &generator)
        nextAttempt = due
        return [.deliver(received), .scheduleRefresh(at: due), .serveWaiters(received)]
    }

    /// The fetch failed; the current token (if still valid) keeps being served.
    public mutating func fetchFailed(
        _ failure: FetchFailure,
        now: Date,
        using generator: inout some RandomNumberGenerator
    ) -> [Action] {
        isFetching = false
        isReplacingInvalidated = false
        hasSettled = true
        consecutiveFailures += 1
        lastFailure = failure
        let delay = policy.retryDelay(after: failure, consecutiveFailures: consecutiveFailures, using: &generator)
        // Never retry later than the moment the current token stops being servable, if that is still ahead and
        // later than the backoff's first step: the outage budget is spent retrying, not waiting. A server's
        // Retry-After is still honoured: the provider is not asked again before it said it would answer.
        var due = now.addingTimeInterval(delay)
        if failure.kind == .transient, let token, token.serveUntil > now, due > token.serveUntil {
            let earliest = max(policy.settings.retryInitial, failure.retryAfter ?? 0)
            due = max(token.serveUntil, now.addingTimeInterval(earliest))
        }
        nextAttempt = due
        return [.scheduleRefresh(at: due), .rejectWaiters(failure)]
    }

    /// An input of the current token changed (a file's contents, another instance's token; SPEC §11): refetch soon.
    ///
    /// Not before `min_interval` after the last fetch started. Nothing happens while a fetch is in flight (the
    /// daemon compares again when it ends) or when a refresh is already due sooner.
    public mutating func inputChanged(now: Date) -> [Action] {
        guard !isFetching else { return [] }
        var due = now
        if let started = lastFetchStarted, started <= now {
            due = max(due, started.addingTimeInterval(policy.settings.minInterval))
        }
        if let next = nextAttempt, next <= due { return [] }
        nextAttempt = due
        return [.scheduleRefresh(at: due)]
    }

    /// A fetch could not start because an input instance has no servable token (`dependency_failed`): like a failed
    /// fetch, but the attempt does not count against `min_interval`, and it settles the instance only when
    /// `settles` (the input has settled itself: a dependent does not make the daemon ready before its input).
    public mutating func inputMissing(
        _ failure: FetchFailure,
        settles: Bool,
        now: Date,
        using generator: inout some RandomNumberGenerator
    ) -> [Action] {
        if isFetching { lastFetchStarted = previousFetchStarted }
        let wasSettled = hasSettled
        let actions = fetchFailed(failure, now: now, using: &generator)
        hasSettled = wasSettled || settles
        return actions
    }

    /// Sets or clears the input problem reported for the instance.
    public mutating func inputProblemChanged(_ problem: FetchFailure?) {
        inputProblem = problem
    }

    /// What the instance reports as its last error: an input's problem first, else the last fetch's failure.
    public var reportedFailure: FetchFailure? { inputProblem ?? lastFailure }

    /// The refresh settings changed (a reload); the current schedule stays, later decisions use the new policy.
    public mutating func configChanged(policy newPolicy: RefreshPolicy) {
        policy = newPolicy
    }

    /// The wall clock was stepped by `offset` seconds (NTP, an operator) while real time went on: every time this
    /// machine holds moves with it, so that a token expires after the same real time it was granted.
    public mutating func clockStepped(by offset: Double) -> [Action] {
        if var shifted = token {
            shifted.obtainedAt.addTimeInterval(offset)
            shifted.expiresAt.addTimeInterval(offset)
            token = shifted
        }
        if var shifted = pendingToken {
            shifted.obtainedAt.addTimeInterval(offset)
            shifted.expiresAt.addTimeInterval(offset)
            pendingToken = shifted
        }
        lastFetchStarted?.addTimeInterval(offset)
        guard let due = nextAttempt else { return [] }
        nextAttempt = due.addingTimeInterval(offset)
        return [.scheduleRefresh(at: due.addingTimeInterval(offset))]
    }

    /// The token that may be served at `now`, if any.
    public func servableToken(at now: Date) -> IssuedToken? {
        guard let token, token.isServable(at: now) else { return nil }
        return token
    }

    public func state(at now: Date) -> State {
        let servable = servableToken(at: now) != nil
        switch (servable, reportedFailure) {
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

    private mutating func beginFetch(now: Date) -> [Action] {
        isFetching = true
        nextAttempt = nil
        previousFetchStarted = lastFetchStarted
        lastFetchStarted = now
        return [.fetch]
    }
}
