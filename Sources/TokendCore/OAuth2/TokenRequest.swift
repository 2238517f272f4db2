import Foundation

/// One rendered token request: what goes on the wire. Its description never shows headers or body.
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
}
