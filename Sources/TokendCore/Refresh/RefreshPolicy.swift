import Foundation

/// When to refresh a token and how long to wait after a failure (SPEC §6).
///
/// After a token obtained at `t` with lifetime `L`:
///
///     base  = min(t + ratio·L, t + L − min_lead)      (or min(t + refresh_in, t + L) when the server hints)
///     lead  = (t + L) − base
///     next  = max(base ± jitter·lead, t + min_interval)
///
/// With the defaults (ratio 0.75, min_lead 60 s, jitter 0.10, min_interval 30 s):
///
/// | L      | base      | next (range)        |
/// |--------|-----------|---------------------|
/// | 3600 s | t + 2700 s| t + 2610 … 2790 s   |
/// | 300 s  | t + 225 s | t + 217.5 … 232.5 s |
/// | 120 s  | t + 60 s  | t + 54 … 66 s       |
/// | 40 s   | t − 20 s  | t + 30 s (floor)    |
///
/// Transient failure number `n` (1, 2, …) waits a uniformly random time in
/// `[retry_initial, min(retry_max, retry_initial·2^(n−1))]`, and at least `Retry-After`; with the defaults the upper
/// bounds are 1, 2, 4, 8, … 256, 300, 300 s. Permanent failures wait `permanent_retry` (or `Retry-After` if longer).
public struct RefreshPolicy: Sendable, Hashable {
    public var settings: RefreshSettings

    public init(_ settings: RefreshSettings) {
        self.settings = settings
    }

    /// The window the refresh of `token` is drawn from: `base ± jitter·lead`, both ends floored at `t + min_interval`.
    public func refreshWindow(for token: IssuedToken) -> ClosedRange<Date> {
        let obtained = token.obtainedAt.timeIntervalSinceReferenceDate
        let expires = token.expiresAt.timeIntervalSinceReferenceDate
        let lifetime = max(0, expires - obtained)
        // The server's `refresh_in` hint, when it sent one, replaces the ratio and lead rule.
        let base =
            token.refreshIn.map { min(obtained + $0, expires) }
            ?? min(obtained + settings.ratio * lifetime, expires - settings.minLead)
        let spread = settings.jitter * max(0, expires - base)
        let floor = obtained + settings.minInterval
        let earliest = Date(timeIntervalSinceReferenceDate: max(base - spread, floor))
        let latest = Date(timeIntervalSinceReferenceDate: max(base + spread, floor))
        return earliest...latest
    }

    /// When to refresh `token`: uniformly random within ``refreshWindow(for:)``.
    public func refreshTime(for token: IssuedToken, using generator: inout some RandomNumberGenerator) -> Date {
        let window = refreshWindow(for: token)
        let width = window.upperBound.timeIntervalSince(window.lowerBound)
        guard width > 0 else { return window.lowerBound }
        return window.lowerBound.addingTimeInterval(Double.random(in: 0...width, using: &generator))
    }

    /// The range the wait after the `consecutiveFailures`-th failure in a row is drawn from (before `Retry-After`).
    public func retryWindow(for kind: FetchFailure.Kind, consecutiveFailures: Int) -> ClosedRange<Double> {
        switch kind {
        case .permanent:
            return settings.permanentRetry...settings.permanentRetry
        case .transient:
            let exponent = Double(min(max(consecutiveFailures, 1) - 1, 62))
            let ceiling = min(settings.retryMax, settings.retryInitial * pow(2, exponent))
            return min(settings.retryInitial, ceiling)...ceiling
        }
    }

    /// How long to wait before the next attempt after the `consecutiveFailures`-th failure in a row.
    public func retryDelay(
        after failure: FetchFailure,
        consecutiveFailures: Int,
        using generator: inout some RandomNumberGenerator
    ) -> Double {
        let window = retryWindow(for: failure.kind, consecutiveFailures: consecutiveFailures)
        let delay = window.upperBound > window.lowerBound ? Double.random(in: window, using: &generator) : window.lowerBound
        return max(delay, failure.retryAfter ?? 0)
    }
}
