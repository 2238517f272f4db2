import Foundation

/// One rendered token request: what goes on the wire.
///
/// Its description never shows headers or body.
public struct TokenRequest: Sendable, Hashable, CustomStringConvertible {
    public struct Header: Sendable, Hashable {
        public var name: String
        public var value: String

        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    public var method: String
    public var url: String
    public var headers: [Header]
    public var body: [UInt8]
    /// The URL with secret variables shown as `<redacted>`, for messages.
    public var redactedURL: String
    /// A private CA and a client certificate for the TLS connection, when the instance has them.
    public var tls = TLSMaterial()
    /// Signed anew for every request and added to the body (``signingAssertion(now:jti:)``).
    public var assertion: ClientAssertion?
    /// How the body is encoded, so that fields can be added to it.
    public var contentType: BodyContentType = .form

    public init(method: String = "POST", url: String, redactedURL: String? = nil, headers: [Header], body: [UInt8]) {
        self.method = method
        self.url = url
        self.redactedURL = redactedURL ?? url
        self.headers = headers
        self.body = body
    }

    /// The host (and port) of the token endpoint, for per-endpoint limits and messages.
    public var endpointHost: String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        let rest = url[schemeEnd.upperBound...]
        return String(rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" })
    }

    public var description: String { "\(method) \(redactedURL) (headers and body redacted)" }

    /// The request to send at `now`: with a client assertion, a freshly signed one (RFC 7523 §2.2) in
    /// `client_assertion_type` and `client_assertion`; without, the request itself.
    public func signingAssertion(now: Date, jti: String) -> Result<TokenRequest, AssertionError> {
        guard let assertion else { return .success(self) }
        let jwt: String
        switch assertion.signed(now: now, jti: jti) {
        case .success(let signed): jwt = signed
        case .failure(let error): return .failure(error)
        }
        let fields = [("client_assertion_type", ClientAssertion.assertionType), ("client_assertion", jwt)]
        var copy = self
        switch contentType {
        case .form:
            let encoded = FormURLEncoding.encode(fields: fields)
            copy.body = body.isEmpty ? Array(encoded.utf8) : body + Array(("&" + encoded).utf8)
        case .json:
            var object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
            for (name, value) in fields { object[name] = value }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
            copy.body = Array(data)
        }
        return .success(copy)
    }
}
