/// The HTTP method of the token request (`method` in a connector, SPEC §3).
public enum TokenMethod: String, Sendable, Hashable, CaseIterable {
    /// The default: the parameters go in the body.
    case post = "POST"
    /// Metadata endpoints (Azure IMDS, GCP): no body, the parameters are the `[query]` table.
    case get = "GET"

    /// The client authentication styles a GET can carry: none puts anything in a body.
    public static let getAuthentications: [ClientAuthentication] = [.none, .clientSecretBasic, .tlsClientAuth]
}

/// `[apply]` of a connector as written (SPEC §13): the header a program sends on API requests, its value template and
/// the non-secret variables a caller allowed to read the token may read too.
public struct ApplySpec: Sendable, Hashable {
    /// The default header name.
    public static let defaultHeader = "Authorization"
    /// The default value template.
    public static let defaultValue = "{{token_type}} {{token}}"
    /// The placeholders `value` may use besides the connector's variables.
    public static let tokenPlaceholders: Set<String> = ["token", "token_type"]

    public var header: String
    public var value: String
    public var expose: [String]

    public init(header: String = ApplySpec.defaultHeader, value: String = ApplySpec.defaultValue, expose: [String] = []) {
        self.header = header
        self.value = value
        self.expose = expose
    }
}

/// The response keys an instance file may override (`token_key`, `expires_in_key`, `expires_at_key`,
/// `token_type_key`): the seed shows the response token key to whoever adds an instance.
public enum ResponseKey: String, Sendable, CaseIterable {
    case tokenKey = "token_key"
    case tokenTypeKey = "token_type_key"
    case expiresInKey = "expires_in_key"
    case expiresAtKey = "expires_at_key"

    /// Writes `path` into the connector's field for this key.
    func set(_ path: String, in connector: inout ConnectorDefinition) {
        switch self {
        case .tokenKey: connector.tokenKey = path
        case .tokenTypeKey: connector.tokenTypeKey = path
        case .expiresInKey: connector.expiresInKey = path
        case .expiresAtKey: connector.expiresAtKey = path
        }
    }
}
