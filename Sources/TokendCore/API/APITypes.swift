/// The methods the socket API knows; anything else is `.other` (and answered 405 where a path exists).
public enum APIMethod: Sendable, Hashable, CustomStringConvertible, ExpressibleByStringLiteral {
    case get
    case post
    case other(String)

    public init(_ name: String) {
        switch name {
        case "GET": self = .get
        case "POST": self = .post
        default: self = .other(name)
        }
    }

    public init(stringLiteral name: String) {
        self.init(name)
    }

    public var description: String {
        switch self {
        case .get: "GET"
        case .post: "POST"
        case .other(let name): name
        }
    }
}

/// The status of a socket API answer, with its reason phrase.
public struct APIStatus: Sendable, Hashable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public var code: Int

    public init(_ code: Int) {
        self.code = code
    }

    public init(integerLiteral code: Int) {
        self.code = code
    }

    public static let ok = APIStatus(200)
    public static let accepted = APIStatus(202)
    public static let badRequest = APIStatus(400)
    public static let forbidden = APIStatus(403)
    public static let notFound = APIStatus(404)
    public static let methodNotAllowed = APIStatus(405)
    public static let contentTooLarge = APIStatus(413)
    public static let headersTooLarge = APIStatus(431)
    public static let serviceUnavailable = APIStatus(503)

    /// The RFC 9110 reason phrase.
    public var reason: String {
        switch code {
        case 200: "OK"
        case 202: "Accepted"
        case 400: "Bad Request"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 413: "Content Too Large"
        case 431: "Request Header Fields Too Large"
        case 503: "Service Unavailable"
        default: "Status \(code)"
        }
    }

    public var description: String { "\(code)" }
}

/// How a token is answered: `format=json|raw|header|apply`, else `raw` for `Accept: text/plain`, else `json`.
public enum TokenFormat: String, Sendable, Hashable, CaseIterable {
    /// `{"access_token": …, "expires_in": …}`.
    case json
    /// The token alone.
    case raw
    /// The value of the connector's `[apply]` header (by default `<token_type> <token>` for `Authorization`).
    case header
    /// `{"headers": {…}, "values": {…}, …}`: the headers to send on API requests and the exposed variables.
    case apply
}

/// The query of `GET /v1/tokens/NAME`, parsed once: the answer's format and the `min_valid` the caller asked for.
public struct TokenQuery: Sendable, Hashable {
    public var format: TokenFormat
    /// Seconds the token must still be valid for; nil when the caller did not ask.
    public var minValid: Double?

    public init(format: TokenFormat = .json, minValid: Double? = nil) {
        self.format = format
        self.minValid = minValid
    }

    /// Why a query is refused (a 400 answer).
    public enum Problem: Error, Sendable, Hashable {
        case badFormat
        case badMinValid
    }

    /// Parses the request's query and `Accept` header.
    public static func parse(_ request: APIRequest) -> Result<TokenQuery, Problem> {
        var query = TokenQuery()
        if let text = request.query["format"] {
            guard let format = TokenFormat(rawValue: text) else { return .failure(.badFormat) }
            query.format = format
        } else if request.accept?.hasPrefix("text/plain") == true {
            query.format = .raw
        }
        if let text = request.query["min_valid"] {
            guard let value = Int(text), value >= 0, value <= 86_400 * 366 else { return .failure(.badMinValid) }
            query.minValid = Double(value)
        }
        return .success(query)
    }
}
