import Foundation

/// What `<state>/<instance>.json` holds: the token and its times, and the fingerprint of the request definition
/// that obtained it. Never the client secret.
public struct CacheRecord: Codable, Sendable, Hashable {
    public static let currentVersion = 1

    public var version: Int
    public var instance: String
    public var access_token: String
    public var token_type: String
    public var scope: String?
    /// Unix epoch seconds.
    public var obtained_at: Double
    public var expires_at: Double
    /// ``ResolvedInstance/fingerprint`` at the time of the fetch.
    public var fingerprint: String
    /// The server's `refresh_in` hint, if any.
    public var refresh_in: Double?

    public init(instance: String, token: IssuedToken, fingerprint: String) {
        self.version = Self.currentVersion
        self.instance = instance
        self.access_token = token.accessToken.revealed
        self.token_type = token.tokenType
        self.scope = token.scope
        self.obtained_at = token.obtainedAt.timeIntervalSince1970
        self.expires_at = token.expiresAt.timeIntervalSince1970
        self.fingerprint = fingerprint
        self.refresh_in = token.refreshIn
    }

    public var token: IssuedToken {
        IssuedToken(
            accessToken: Secret(access_token),
            tokenType: token_type,
            scope: scope,
            obtainedAt: Date(timeIntervalSince1970: obtained_at),
            expiresAt: Date(timeIntervalSince1970: expires_at),
            refreshIn: refresh_in
        )
    }

    /// Encodes the record as JSON bytes.
    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? Array(encoder.encode(self))) ?? []
    }

    /// Decodes and checks a record; nil when the bytes are not one of ours for `instance`.
    public static func decode(_ bytes: [UInt8], instance: String) -> CacheRecord? {
        guard let record = try? JSONDecoder().decode(CacheRecord.self, from: Data(bytes)),
            record.version == currentVersion, record.instance == instance, !record.access_token.isEmpty,
            record.expires_at.isFinite, record.obtained_at.isFinite, record.expires_at > record.obtained_at,
            record.expires_at - record.obtained_at <= TokenResponseParser.maxLifetime + 1,
            record.refresh_in.map({ $0.isFinite }) ?? true
        else { return nil }
        return record
    }
}
