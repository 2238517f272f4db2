/// Why a token fetch failed, classified for the retry policy (SPEC §6).
public struct FetchFailure: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// Network, timeout, 5xx, 429, unparseable response: retry with backoff.
        case transient
        /// The provider rejected the client (RFC 6749 §5.2 codes, 401/403): retry only every `permanent_retry`.
        case permanent
    }

    public var kind: Kind
    /// A stable, bounded code: an RFC 6749 error code, `http_503`, `network`, `timeout`, `invalid_response`, ….
    public var code: String
    /// A human-readable message. Never contains a secret or a token.
    public var message: String
    /// Seconds the server asked us to wait (`Retry-After`).
    public var retryAfter: Double?

    public init(kind: Kind, code: String, message: String, retryAfter: Double? = nil) {
        self.kind = kind
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
    }

    public var description: String { "\(code): \(message)" }

    public static func network(_ message: String) -> FetchFailure {
        FetchFailure(kind: .transient, code: "network", message: message)
    }

    public static func timeout(_ message: String) -> FetchFailure {
        FetchFailure(kind: .transient, code: "timeout", message: message)
    }
}
