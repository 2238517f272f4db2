import Foundation

/// `token_key = ""`: the whole body of a `text/plain` answer is the token (Azure App Service, GCP metadata identity
/// tokens, many internal endpoints).
extension TokenResponseParser {
    /// The longest plain-text token taken: a token is a few KiB at most, and a longer body is some other answer.
    public static let maxPlainTextTokenBytes = 64 * 1024

    /// The token from a plain-text body, one trailing newline (`\n` or `\r\n`) removed; its lifetime from a JWT `exp`
    /// or `default_ttl`, as for a JSON answer without `expires_in`.
    ///
    /// Never quotes the body: all of it is the token.
    static func parsePlainText(
        status: Int,
        body: [UInt8],
        contentType: String?,
        shape: Shape,
        requestedScope: String?,
        now: Date
    ) -> Result<IssuedToken, FetchFailure> {
        if let contentType {
            let mediaType = contentType.prefix { $0 != ";" }.trimmingCharacters(in: .whitespaces).lowercased()
            guard mediaType == "text/plain" || mediaType == "application/text" || mediaType == "application/jwt" else {
                return .failure(
                    invalid("HTTP \(status) answered \(mediaType.prefix(60)), not text/plain (token_key = \"\" takes a text/plain body)")
                )
            }
        }
        var token = body[...]
        if token.last == UInt8(ascii: "\n") { token = token.dropLast() }
        if token.last == UInt8(ascii: "\r") { token = token.dropLast() }
        guard !token.isEmpty else {
            return .failure(invalid("HTTP \(status) with an empty body (token_key = \"\" takes the whole body as the token)"))
        }
        guard token.count <= maxPlainTextTokenBytes else {
            return .failure(
                invalid("HTTP \(status) with a \(token.count)-byte body; a plain-text token is at most \(maxPlainTextTokenBytes) bytes")
            )
        }
        // A token is printable ASCII without spaces (RFC 6750 §2.1 b64token, and what every provider issues).
        guard token.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return .failure(
                invalid("HTTP \(status) with a body that is not a single token (\(describeShape(Array(body), parsed: nil))); not shown")
            )
        }
        let text = String(decoding: token, as: UTF8.self)
        let lifetime: Double
        switch lifetimeOf(json: .object([:]), token: text, shape: shape, now: now) {
        case .success(let seconds): lifetime = seconds
        case .failure(let failure): return .failure(failure)
        }
        return .success(
            IssuedToken(
                accessToken: Secret(text),
                tokenType: "Bearer",
                scope: requestedScope.flatMap { $0.isEmpty ? nil : $0 },
                obtainedAt: now,
                expiresAt: now.addingTimeInterval(lifetime),
                refreshIn: nil
            )
        )
    }
}
