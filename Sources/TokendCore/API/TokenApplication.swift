import Foundation

/// How a program applies an instance's token on API requests (SPEC §13), ready to answer: the header name, its value
/// with the connector's variables already filled in (`{{token}}` and `{{token_type}}` are filled per token), and the
/// variables the connector exposes.
///
/// Made from `[apply]` when the instance is resolved; holds no secret (the config rejects secret variables in `value`
/// and `expose`, and they are left out here as well).
public struct TokenApplication: Sendable, Hashable {
    /// The header programs send, such as `Authorization` or `X-Shopify-Access-Token`.
    public var header: String
    /// The value template, every variable but `token` and `token_type` rendered.
    public var pieces: [Template.Piece]
    /// The exposed variables' values, by name.
    public var values: [String: String]

    public init(header: String, pieces: [Template.Piece], values: [String: String]) {
        self.header = header
        self.pieces = pieces
        self.values = values
    }

    /// No `[apply]`: `Authorization: <token_type> <token>`, nothing exposed.
    public static let standard = TokenApplication(spec: nil, variable: { _ in nil })

    /// Renders `spec` (nil: the default) with `variable`, which must answer nil for secret variables.
    public init(spec: ApplySpec?, variable: (String) -> String?) {
        let spec = spec ?? ApplySpec()
        var pieces: [Template.Piece] = []
        func appendLiteral(_ text: String) {
            if case .literal(let previous)? = pieces.last {
                pieces[pieces.count - 1] = .literal(previous + text)
            } else {
                pieces.append(.literal(text))
            }
        }
        Template.walk(spec.value) { piece in
            switch piece {
            case .literal(let text):
                appendLiteral(text)
            case .placeholder(let name, let original):
                if ApplySpec.tokenPlaceholders.contains(name) {
                    pieces.append(piece)
                } else {
                    appendLiteral(variable(name) ?? original)
                }
            }
        }
        var values: [String: String] = [:]
        for name in spec.expose {
            if let value = variable(name) { values[name] = value }
        }
        self.init(header: spec.header, pieces: pieces, values: values)
    }

    /// The header's value for `token`.
    public func headerValue(for token: IssuedToken) -> String {
        var output = ""
        for piece in pieces {
            switch piece {
            case .literal(let text): output += text
            case .placeholder("token", _): output += token.accessToken.revealed
            case .placeholder("token_type", _): output += Self.tokenType(token.tokenType)
            case .placeholder(_, let original): output += original
            }
        }
        return output
    }

    /// A token type as it is written in a header: `bearer` in any case is `Bearer` (RFC 6750 §1.1; some providers
    /// answer `bearer`, and some APIs refuse it).
    public static func tokenType(_ type: String) -> String {
        type.lowercased() == "bearer" ? "Bearer" : type
    }

    /// The answer to `?format=apply`.
    public func body(name: String, token: IssuedToken, now: Date) -> API.ApplyBody {
        API.ApplyBody(
            instance: name,
            headers: [header: headerValue(for: token)],
            values: values,
            expires_at: Int(token.expiresAt.timeIntervalSince1970),
            expires_in: APIRouter.expiresIn(token, now: now)
        )
    }
}

extension ResolvedInstance {
    /// How programs apply this instance's token: its connector's `[apply]` with its values (secrets never).
    public var application: TokenApplication {
        let definition = self.definition
        guard definition.connector.apply != nil else { return .standard }
        return TokenApplication(spec: definition.connector.apply) { name in
            definition.secretVariables.contains(name) ? nil : variable(name)?.revealed
        }
    }
}

extension TokenFormat {
    /// Whether the answer follows the connector's `[apply]`.
    public var usesApplication: Bool { self == .header || self == .apply }

    /// Whether the answer carries `expires_in` (and so changes every second).
    public var changesEverySecond: Bool { self == .json || self == .apply }
}
