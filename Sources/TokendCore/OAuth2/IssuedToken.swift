import Foundation

/// A token the endpoint issued, with the times that govern its refresh.
///
/// Prints without the token.
public struct IssuedToken: Sendable, Hashable, CustomStringConvertible {
    public var accessToken: Secret
    public var tokenType: String
    public var scope: String?
    public var obtainedAt: Date
    public var expiresAt: Date
    /// The server's hint (`refresh_in`, seconds after `obtainedAt`) for when to refresh, if it sent one.
    public var refreshIn: Double?

    public init(
        accessToken: Secret,
        tokenType: String,
        scope: String?,
        obtainedAt: Date,
        expiresAt: Date,
        refreshIn: Double? = nil
    ) {
        self.accessToken = accessToken
        self.tokenType = tokenType
        self.scope = scope
        self.obtainedAt = obtainedAt
        self.expiresAt = expiresAt
        self.refreshIn = refreshIn
    }

    /// The lifetime the endpoint granted, in seconds.
    public var lifetime: Double { expiresAt.timeIntervalSince(obtainedAt) }

    /// The last moment it may be served: expiry less `min(5 s, 10 % of its lifetime)`.
    public var serveUntil: Date {
        expiresAt.addingTimeInterval(-min(5, max(lifetime, 0) * 0.1))
    }

    /// Whether it may be served at `now`.
    public func isServable(at now: Date) -> Bool {
        now < serveUntil && now >= obtainedAt.addingTimeInterval(-300)
    }

    /// The first 16 hex digits of SHA-256 of the token: how logs and the API refer to it.
    public var fingerprint: String { TokenFingerprint.of(accessToken) }

    public var description: String {
        "IssuedToken(\(tokenType), fingerprint \(fingerprint), expires \(expiresAt))"
    }
}
