import Foundation

/// RFC 3339 timestamps (`2026-11-29T10:00:00Z`, with or without fractional seconds or an offset).
public enum RFC3339 {
    public static func parse(_ text: String) -> Date? {
        let withFraction = ISO8601DateFormatter()
        withFraction.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = withFraction.date(from: text) { return date }
        let plain = ISO8601DateFormatter()
        plain.formatOptions = [.withInternetDateTime]
        return plain.date(from: text)
    }

    public static func format(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
public enum RetryAfter {
    /// Seconds to wait from `now`, or nil when the value is neither form.
    ///
    /// The longest wait honoured (a day): a hostile or broken `Retry-After: 9223372036854775807` must not overflow time
    /// arithmetic or park an instance for centuries.
    public static let maxSeconds: Double = 86_400

    public static func seconds(from value: String, now: Date) -> Double? {
        let value = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Int(value), seconds >= 0 { return min(Double(seconds), maxSeconds) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: value) else { return nil }
        return min(max(0, date.timeIntervalSince(now)), maxSeconds)
    }
}

/// The claims tokend reads from a JWT access token, without verifying it (the token is the provider's business).
public enum JWTClaims {
    /// The `exp` claim of a JWS compact token, when the token is one.
    public static func expiry(of token: String) -> Date? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let payload = Base64URL.decode(parts[1]).map(Array.init) else { return nil }
        guard let exp = JSONValue.parse(payload)?.value(at: "exp"), case .number(let seconds) = exp else { return nil }
        return Date(timeIntervalSince1970: seconds)
    }
}
