import Foundation

/// Reads a token endpoint's answer: the token and its lifetime on success (RFC 6749 §5.1), a classified
/// failure otherwise (§5.2).
public enum TokenResponseParser {
    /// The RFC 6749 §5.2 codes after which retrying soon cannot help.
    ///
    /// `invalid_grant` is among them: a client-credentials request has no grant that could expire, and providers
    /// (Salesforce, for one) answer a disabled or misconfigured client with it.
    public static let permanentErrorCodes: Set<String> = [
        "invalid_client", "unauthorized_client", "invalid_scope", "unsupported_grant_type", "invalid_request",
        "invalid_grant",
    ]

    public struct Shape: Sendable, Hashable {
        public var tokenKey: String
        public var tokenTypeKey: String
        public var expiresInKey: String
        public var expiresAtKey: String?
        public var defaultTTL: Double?

        public init(
            tokenKey: String = "access_token",
            tokenTypeKey: String = "token_type",
            expiresInKey: String = "expires_in",
            expiresAtKey: String? = nil,
            defaultTTL: Double? = nil
        ) {
            self.tokenKey = tokenKey
            self.tokenTypeKey = tokenTypeKey
            self.expiresInKey = expiresInKey
            self.expiresAtKey = expiresAtKey
            self.defaultTTL = defaultTTL
        }

        public init(_ connector: ConnectorDefinition) {
            self.init(
                tokenKey: connector.tokenKey,
                tokenTypeKey: connector.tokenTypeKey,
                expiresInKey: connector.expiresInKey,
                expiresAtKey: connector.expiresAtKey,
                defaultTTL: connector.defaultTTL
            )
        }
    }

    /// Parses one response.
    ///
    /// `retryAfter` is the raw `Retry-After` header, if any. `secrets` (the instance's secret values and credentials)
    /// are scrubbed from what the provider sent before it is clipped into a message, so that a provider that echoes the
    /// request cannot leak even part of one.
    public static func parse(
        status: Int,
        body: [UInt8],
        retryAfter: String? = nil,
        shape: Shape,
        requestedScope: String? = nil,
        secrets: [String] = [],
        contentType: String? = nil,
        now: Date
    ) -> Result<IssuedToken, FetchFailure> {
        let parsed = JSONValue.parse(body)
        var json = parsed
        if case .object = json {} else { json = nil }
        guard (200..<300).contains(status) else {
            return .failure(classifyError(status: status, json: json, body: body, retryAfter: retryAfter, secrets: secrets, now: now))
        }
        if shape.tokenKey.isEmpty {
            return parsePlainText(
                status: status,
                body: body,
                contentType: contentType,
                shape: shape,
                requestedScope: requestedScope,
                now: now
            )
        }
        guard let json else {
            // A success may carry the token in any shape (form-encoded, bare, truncated JSON): not one byte of it goes
            // into the message, which reaches the log, /v1/instances and `tokend status`.
            let message =
                body.isEmpty
                ? "HTTP \(status) with an empty body"
                : "HTTP \(status) with a body that is not a JSON object (\(body.count) bytes, \(describeShape(body, parsed: parsed)));"
                    + " not shown, as it may hold the token"
            return .failure(FetchFailure(kind: .transient, code: "invalid_response", message: message))
        }
        guard let token = json.value(at: shape.tokenKey)?.stringValue, !token.isEmpty else {
            return .failure(
                FetchFailure(
                    kind: .transient,
                    code: "invalid_response",
                    message:
                        "HTTP \(status) response has no string at '\(shape.tokenKey)' (keys: \(json.objectKeys.prefix(10).joined(separator: ", ")))"
                )
            )
        }
        let tokenType = json.value(at: shape.tokenTypeKey)?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        // RFC 6749 §5.1: the server may leave `scope` out when it granted what was requested.
        let scope = json.value(at: "scope")?.stringValue ?? requestedScope.flatMap { $0.isEmpty ? nil : $0 }
        let lifetime: Double
        switch lifetimeOf(json: json, token: token, shape: shape, now: now) {
        case .success(let seconds): lifetime = seconds
        case .failure(let failure): return .failure(failure)
        }
        return .success(
            IssuedToken(
                accessToken: Secret(token),
                tokenType: tokenType ?? "Bearer",
                scope: scope,
                obtainedAt: now,
                expiresAt: now.addingTimeInterval(lifetime),
                refreshIn: json.value(at: "refresh_in")?.numberValue.flatMap { $0 > 0 && $0.isFinite ? $0 : nil }
            )
        )
    }

    /// The longest lifetime tokend believes: a longer (or absurd, `1e300`) one is cut to 366 days, so that the
    /// token is still refreshed within the year and no time arithmetic overflows.
    public static let maxLifetime: Double = 366 * 86_400

    /// The token's lifetime in seconds: from `expires_in` (or `expires_at`), cut short by the token's own JWT `exp`
    /// when that comes sooner (resource servers reject the token then), else from the JWT alone, else
    /// `default_ttl`; never more than ``maxLifetime``.
    static func lifetimeOf(json: JSONValue, token: String, shape: Shape, now: Date) -> Result<Double, FetchFailure> {
        var declared: Double?
        if let raw = json.value(at: shape.expiresInKey) {
            guard let seconds = raw.numberValue, seconds.isFinite else {
                return .failure(invalid("'\(shape.expiresInKey)' is not a number of seconds"))
            }
            guard seconds > 0 else {
                return .failure(invalid("'\(shape.expiresInKey)' is \(seconds); expected a lifetime above zero"))
            }
            declared = seconds
        } else if let key = shape.expiresAtKey, let raw = json.value(at: key) {
            guard let seconds = date(raw)?.timeIntervalSince(now), seconds.isFinite else {
                return .failure(invalid("'\(key)' is neither epoch seconds nor an RFC 3339 time"))
            }
            guard seconds > 0 else { return .failure(invalid("'\(key)' lies in the past")) }
            declared = seconds
        }
        let claimed = JWTClaims.expiry(of: token)?.timeIntervalSince(now)
        if let claimed, !(claimed > 0) {
            return .failure(invalid("the token's JWT 'exp' lies in the past"))
        }
        guard let seconds = [declared, claimed].compactMap({ $0 }).min() ?? shape.defaultTTL else {
            return .failure(
                FetchFailure(
                    kind: .permanent,
                    code: "no_lifetime",
                    message: "the response gives no lifetime ('\(shape.expiresInKey)' absent, the token is not a JWT "
                        + "with 'exp'); set expires_in_key, expires_at_key or default_ttl"
                )
            )
        }
        return .success(min(seconds, maxLifetime))
    }

    static func classifyError(
        status: Int,
        json: JSONValue?,
        body: [UInt8],
        retryAfter: String?,
        secrets: [String] = [],
        now: Date
    ) -> FetchFailure {
        let wait = retryAfter.flatMap { RetryAfter.seconds(from: $0, now: now) }
        let oauthCode = json?.value(at: "error")?.stringValue.flatMap(boundedCode)
        let oauthDescription = json?.value(at: "error_description")?.stringValue.map {
            String(FetchFailure.redact($0, secrets).prefix(200))
        }
        if let oauthCode, permanentErrorCodes.contains(oauthCode) {
            var message = "HTTP \(status): \(oauthCode)"
            if let oauthDescription { message += " (\(oauthDescription))" }
            return FetchFailure(kind: .permanent, code: oauthCode, message: message, retryAfter: wait)
        }
        let detail: String
        if let oauthCode {
            detail = oauthCode + (oauthDescription.map { " (\($0))" } ?? "")
        } else {
            detail = body.isEmpty ? "empty body" : snippet(body, secrets: secrets)
        }
        let message = "HTTP \(status): \(detail)"
        if status == 401 || status == 403 {
            return FetchFailure(kind: .permanent, code: oauthCode ?? "http_\(status)", message: message, retryAfter: wait)
        }
        return FetchFailure(kind: .transient, code: oauthCode ?? "http_\(status)", message: message, retryAfter: wait)
    }

    /// An error code from the server, kept only when it looks like one (so labels and logs stay bounded).
    static func boundedCode(_ code: String) -> String? {
        guard !code.isEmpty, code.utf8.count <= 64,
            code.unicodeScalars.allSatisfy({ $0.isASCIIAlphanumeric || $0 == "_" || $0 == "-" || $0 == "." })
        else { return nil }
        return code
    }

    static func invalid(_ message: String) -> FetchFailure {
        FetchFailure(kind: .transient, code: "invalid_response", message: message)
    }

    /// What a body that is not a JSON object looks like, in words that quote none of it: "form-encoded", "HTML",
    /// "a JSON array", "malformed or truncated JSON", "binary", "plain text".
    static func describeShape(_ body: [UInt8], parsed: JSONValue?) -> String {
        switch parsed {
        case .array?: return "a JSON array"
        case .string?: return "a JSON string"
        case .number?, .bool?, .null?: return "a JSON scalar"
        case .object?, nil: break
        }
        let text = body.drop { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        guard let first = text.first else { return "only white space" }
        if first == UInt8(ascii: "{") || first == UInt8(ascii: "[") { return "malformed or truncated JSON" }
        if first == UInt8(ascii: "<") { return "HTML or XML" }
        guard let decoded = String(validating: text, as: UTF8.self),
            !decoded.unicodeScalars.contains(where: { $0.value < 0x20 && !"\t\r\n".unicodeScalars.contains($0) })
        else { return "binary" }
        // `name=value&…` with a name tokend might expect (RFC 6749 asks for JSON; some old APIs answer a form).
        if let equals = decoded.firstIndex(of: "="), decoded[..<equals].unicodeScalars.allSatisfy({ $0.isASCIIAlphanumeric || $0 == "_" }),
            equals != decoded.startIndex
        {
            return "form-encoded"
        }
        return "plain text"
    }

    /// The first 200 characters of a body, on one line, for messages.
    static func snippet(_ body: [UInt8], secrets: [String] = []) -> String {
        let text = FetchFailure.redact(String(decoding: body.prefix(800), as: UTF8.self), secrets)
        let flat = text.map { $0.isNewline || $0 == "\t" ? " " : $0 }
        let clipped = String(flat.prefix(200))
        return "\"" + clipped + "\"" + (flat.count > 200 || body.count > 800 ? "…" : "")
    }

    static func date(_ raw: JSONValue) -> Date? {
        if case .number(let seconds) = raw { return Date(timeIntervalSince1970: seconds) }
        guard let text = raw.stringValue else { return nil }
        if let seconds = Double(text) { return Date(timeIntervalSince1970: seconds) }
        return RFC3339.parse(text)
    }
}
