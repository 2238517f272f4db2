import Foundation

/// The fleet's rules for one shared instance (SPEC §14), as pure decisions: the row as read, this host's token and
/// the time in; what to do out.
public enum FleetDecision {
    /// The shared row as this host sees it: its generation and the token it could open (nil when there is none, or
    /// it does not open with this host's key).
    public struct RowView: Sendable, Hashable {
        public var generation: Int64
        public var token: IssuedToken?
        /// The host that fetched the token.
        public var fetchedBy: String?

        public init(generation: Int64, token: IssuedToken?, fetchedBy: String? = nil) {
            self.generation = generation
            self.token = token
            self.fetchedBy = fetchedBy
        }
    }

    /// What to do when the instance needs a new token.
    public enum Step: Sendable, Hashable {
        /// Serve the row's token: another host fetched it and it is not yet due for refresh.
        case adopt(IssuedToken, generation: Int64)
        /// Take the lease on the row at this generation (compare-and-swap), then fetch from the provider.
        case lease(expecting: Int64)
    }

    /// When the instance needs a token (its refresh is due, it has none, or a client invalidated `invalidated`):
    /// the row's token is adopted when it is servable, is not the token being replaced, and this host's policy would
    /// not refresh it yet; otherwise this host asks for the lease on the row's generation.
    ///
    /// A row written by another host just before this one became due is thereby taken instead of fetched again:
    /// one provider request per refresh for the whole fleet.
    public static func step(
        row: RowView?,
        current: IssuedToken?,
        invalidated: String?,
        policy: RefreshPolicy,
        now: Date
    ) -> Step {
        guard let row else { return .lease(expecting: 0) }
        guard let token = row.token, token.isServable(at: now), token.fingerprint != invalidated,
            token.fingerprint != current?.fingerprint
        else { return .lease(expecting: row.generation) }
        if invalidated != nil || policy.refreshWindow(for: token).lowerBound > now {
            return .adopt(token, generation: row.generation)
        }
        return .lease(expecting: row.generation)
    }

    /// How long this host may wait on the fleet (reads, a lease, another host's fetch) before it fetches alone: half
    /// the time its token has left to be served; nil when it has none to lose (it waits for the store's answer).
    ///
    /// A slow database thereby costs a provider request, never a lapsed token.
    public static func patience(current: IssuedToken?, now: Date) -> Date? {
        guard let current, current.isServable(at: now) else { return nil }
        return now.addingTimeInterval(current.serveUntil.timeIntervalSince(now) / 2)
    }

    /// What to do after the lease was refused.
    public enum AfterRefusal: Sendable, Hashable {
        /// The row moved on (another host wrote it): decide again with the row as it is now.
        case decideAgain(RowView)
        /// Another host holds the lease: wait for its write (the notification) until this time, then ask again.
        case wait(until: Date)
        /// Waiting any longer would let this host's token lapse: fetch alone.
        case fetchAlone
    }

    /// After a refused lease on the row at `expected`: decide again if the row moved; otherwise wait for the
    /// holder's write until its lease runs out (plus a little, for the holder's write to land) — unless this host's
    /// token would stop being servable first, in which case it fetches alone rather than lapse.
    public static func afterRefusal(
        row: RowView,
        expected: Int64,
        leaseLeft: Double?,
        current: IssuedToken?,
        now: Date
    ) -> AfterRefusal {
        if row.generation != expected { return .decideAgain(row) }
        let until = now.addingTimeInterval(max(0, leaseLeft ?? 0) + 0.25)
        if let current, current.isServable(at: now), until >= current.serveUntil { return .fetchAlone }
        return .wait(until: until)
    }

    /// Whether a row another host just wrote replaces this host's token: it is a later generation than the one
    /// this host serves (nil: a token fetched alone or read from the cache), it opens, is servable and is another
    /// token.
    public static func adoptsNotified(row: RowView, localGeneration: Int64?, current: IssuedToken?, now: Date) -> IssuedToken? {
        guard let token = row.token, token.isServable(at: now), row.generation > (localGeneration ?? 0),
            token.fingerprint != current?.fingerprint
        else { return nil }
        if let current, current.isServable(at: now), localGeneration == nil, token.expiresAt <= current.expiresAt {
            return nil
        }
        return token
    }
}
