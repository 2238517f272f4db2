/// How the client authenticates to the token endpoint (RFC 6749 §2.3, RFC 7591 `token_endpoint_auth_method` names).
public enum ClientAuthentication: String, Sendable, Hashable, CaseIterable {
    case clientSecretPost = "client_secret_post"
    case clientSecretBasic = "client_secret_basic"
    case none = "none"

    /// Whether `client_secret` is required for this style.
    public var needsSecret: Bool { self != .none }
}

/// The body encoding of the token request.
public enum BodyContentType: String, Sendable, Hashable, CaseIterable {
    case form = "application/x-www-form-urlencoded"
    case json = "application/json"
}

/// How `client_secret_basic` encodes the id and secret before base64.
public enum BasicEncoding: String, Sendable, Hashable, CaseIterable {
    /// RFC 6749 §2.3.1: form-url-encode both, then base64.
    case formURLEncoded = "form"
    /// No encoding, for servers that do not decode.
    case raw = "raw"
}

/// Where a variable's value comes from.
public enum VariableSource: Sendable, Hashable {
    /// Written in the file.
    case literal(String)
    /// Read from a file (trailing newline trimmed); re-read on every reload.
    case file(path: String)
    /// Read from `$CREDENTIALS_DIRECTORY/<name>` (systemd `LoadCredential=`).
    case credential(name: String)
}

/// One instance as written in its file: connector keys and variable sources, before secrets are read.
public struct InstanceDefinition: Sendable, Hashable {
    /// The file name without `.toml`.
    public var name: String
    /// The path of the file it came from, for messages.
    public var file: String
    public var description: String?
    /// `token_url`, possibly with `{{variable}}` placeholders.
    public var tokenURL: String
    public var clientAuth: ClientAuthentication
    public var basicEncoding: BasicEncoding
    public var contentType: BodyContentType
    public var allowInsecureHTTP: Bool
    /// Dotted path of the token in the JSON response.
    public var tokenKey: String
    public var tokenTypeKey: String
    public var expiresInKey: String
    public var expiresAtKey: String?
    /// Lifetime used when the response carries none (seconds).
    public var defaultTTL: Double?
    /// Variable values as written, by exact (case-sensitive) name.
    public var variables: [String: VariableSource]
    /// Names of variables that are secret (never logged, never cached, hashed in the fingerprint).
    public var secretVariables: Set<String>
    /// The line each variable was written on, for errors found while reading secrets.
    public var variableLines: [String: Int]
    /// Per-instance overrides of the daemon's refresh settings.
    public var refresh: RefreshSettings.Overrides

    /// The variables every connector has, with their defaults (the seed's defaults).
    public static let builtinDefaults: [String: String] = [
        "grant_type": "client_credentials",
        "scope": "",
    ]
}
