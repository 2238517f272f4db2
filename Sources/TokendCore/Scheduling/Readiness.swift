/// When the daemon is ready (SPEC §9): once every instance has a token or a finished first attempt, or when
/// `startup_timeout` runs out, whichever comes first; and never again after that (a reload sends `READY=1` on its
/// own terms).
public struct Readiness: Sendable, Hashable {
    public private(set) var isReady = false
    /// Instances that have neither a token nor a finished attempt.
    public private(set) var unsettled: Set<String> = []

    public init() {}

    /// An instance started (or restarted); `settled` when it already has a token.
    public mutating func started(_ name: String, settled: Bool) {
        if settled { unsettled.remove(name) } else { unsettled.insert(name) }
    }

    /// An instance got a token or finished an attempt, or was removed.
    public mutating func settled(_ name: String) {
        unsettled.remove(name)
    }

    /// Whether `READY=1` goes out now: the first time every instance has settled, or `startupTimedOut`.
    public mutating func becomesReady(startupTimedOut: Bool) -> Bool {
        guard !isReady, startupTimedOut || unsettled.isEmpty else { return false }
        isReady = true
        return true
    }
}
