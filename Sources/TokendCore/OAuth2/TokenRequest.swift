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
    /// `client_assertion_type` and `client_assertion`, and in place of `{{assertion}}` in the body (RFC 7523 §2.1);
    /// without, the request itself.
    public func signingAssertion(now: Date, jti: String) -> Result<TokenRequest, AssertionError> {
        guard let assertion else { return .success(self) }
        let jwt: String
        switch assertion.signed(now: now, jti: jti) {
        case .success(let signed): jwt = signed
        case .failure(let error): return .failure(error)
        }
        var copy = self
        copy.body = Self.replacingAssertionMarker(in: body, with: jwt)
        guard assertion.isClientAuthentication else { return .success(copy) }
        let body = copy.body
        let fields = [("client_assertion_type", ClientAssertion.assertionType), ("client_assertion", jwt)]
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

    /// The body with each ``ClientAssertion/bodyMarker`` replaced by the JWT (whose base64url and dots need no
    /// escaping in a form or JSON body).
    static func replacingAssertionMarker(in body: [UInt8], with jwt: String) -> [UInt8] {
        let marker = Array(ClientAssertion.bodyMarker.utf8)
        guard body.count >= marker.count else { return body }
        var output: [UInt8] = []
        output.reserveCapacity(body.count + jwt.utf8.count)
        var index = 0
        while index < body.count {
            if body[index] == marker[0], index + marker.count <= body.count, body[index..<index + marker.count].elementsEqual(marker) {
                output.append(contentsOf: jwt.utf8)
                index += marker.count
            } else {
                output.append(body[index])
                index += 1
            }
        }
        return output
    }
}
