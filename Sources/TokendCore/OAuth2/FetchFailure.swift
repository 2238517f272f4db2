import Foundation

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
    /// A human-readable message.
    ///
    /// Never contains a secret or a token.
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

    /// This failure with every occurrence of the given secrets in its message replaced by `<redacted>`, in case a
    /// provider echoes the request back in its error page.
    public func redacting(_ secrets: [String]) -> FetchFailure {
        var copy = self
        copy.message = Self.redact(message, secrets)
        return copy
    }

    /// `text` with every secret (of 4 or more bytes), as written and form-url-encoded, replaced by `<redacted>`.
    public static func redact(_ text: String, _ secrets: [String]) -> String {
        var text = text
        for secret in secrets where secret.utf8.count >= 4 {
            text = text.replacingOccurrences(of: secret, with: "<redacted>")
            let encoded = FormURLEncoding.encode(secret)
            if encoded != secret {
                text = text.replacingOccurrences(of: encoded, with: "<redacted>")
            }
        }
        return text
    }

    public static func network(_ message: String) -> FetchFailure {
        FetchFailure(kind: .transient, code: "network", message: message)
    }

    public static func timeout(_ message: String) -> FetchFailure {
        FetchFailure(kind: .transient, code: "timeout", message: message)
    }
}
