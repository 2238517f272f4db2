/// How the client authenticates to the token endpoint (RFC 6749 §2.3, RFC 7591 `token_endpoint_auth_method` names).
public enum ClientAuthentication: String, Sendable, Hashable, CaseIterable {
    case clientSecretPost = "client_secret_post"
    case clientSecretBasic = "client_secret_basic"
    /// An HS256 JWT signed with the client secret (OpenID Connect Core §9).
    case clientSecretJWT = "client_secret_jwt"
    /// An RS256 or ES256 JWT signed with the `private_key` variable (RFC 7523 §2.2, OpenID Connect Core §9).
    case privateKeyJWT = "private_key_jwt"
    /// A client certificate presented on the TLS connection (RFC 8705 §2.1).
    case tlsClientAuth = "tls_client_auth"
    /// No client authentication by tokend: credentials go only where the connector's headers or body put them.
    case none = "none"

    /// Whether `client_secret` is required for this style.
    public var needsSecret: Bool { self == .clientSecretPost || self == .clientSecretBasic || self == .clientSecretJWT }

    /// Whether each request carries a signed client assertion (RFC 7523 §2.2).
    public var usesAssertion: Bool { self == .clientSecretJWT || self == .privateKeyJWT }
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
    /// Read from a file (trailing newline trimmed); read again when it changes and before every fetch (SPEC §11).
    case file(path: String)
    /// Read from `$CREDENTIALS_DIRECTORY/<name>` (systemd `LoadCredential=`), like a file.
    case credential(name: String)
    /// Another instance's current access token (SPEC §11): a dependency.
    case instance(name: String)

    /// Whether the value can change while the daemon runs (a file, a credential, another instance's token).
    public var isLive: Bool {
        if case .literal = self { return false }
        return true
    }

    /// The source's name: what stands for another instance's token in the request's fingerprint.
    public var fingerprintMarker: String {
        switch self {
        case .literal(let text): return text
        case .file(let path): return "<file \(path)>"
        case .credential(let name): return "<credential \(name)>"
        case .instance(let name): return "<instance \(name)>"
        }
    }
}

/// What a connector says about one variable (`[variables.<name>]`).
public struct VariableSpec: Sendable, Hashable {
    public var required: Bool
    public var defaultValue: String?
    public var secret: Bool
    public var description: String?

    public init(required: Bool = false, defaultValue: String? = nil, secret: Bool = false, description: String? = nil) {
        self.required = required
        self.defaultValue = defaultValue
        self.secret = secret
        self.description = description
    }
}

/// One templated entry of `[query]`, `[headers]` or `[body]`, in the order it was written.
public struct TemplateField: Sendable, Hashable {
    public var name: String
    public var template: String
    public var line: Int?

    public init(name: String, template: String, line: Int? = nil) {
        self.name = name
        self.template = template
        self.line = line
    }
}

/// An authentication method for one API: how to ask its token endpoint and where the answer sits.
///
/// Comes from `connectors/<name>.toml`, or from an instance file that writes the keys inline.
public struct ConnectorDefinition: Sendable, Hashable {
    /// The connector's name (the instance's name for the inline form).
    public var name: String
    /// The file it was written in, for messages.
    public var file: String
    public var isInline: Bool
    public var description: String?
    /// `token_url`, possibly with `{{variable}}` placeholders; empty when `issuer` is set, until discovery fills it.
    public var tokenURL: String
    /// `issuer`: the token endpoint comes from the issuer's metadata (OpenID Connect Discovery, RFC 8414).
    public var issuer: String?
    /// `ca_file`: a PEM file of CA certificates trusted in addition to the system's.
    public var caFile: String?
    /// `assertion_audience`: the `aud` of client assertions instead of the token URL.
    public var assertionAudience: String?
    /// The text of the file it was written in, for the lines of its keys in messages (found only when asked for).
    public var source: SourceLines?
    public var tokenURLLine: Int? { source?.line(of: ["token_url"]) }
    public var issuerLine: Int? { source?.line(of: ["issuer"]) }
    public var caFileLine: Int? { source?.line(of: ["ca_file"]) }
    public var assertionAudienceLine: Int? { source?.line(of: ["assertion_audience"]) }
    public var clientAuth: ClientAuthentication = .clientSecretPost
    public var basicEncoding: BasicEncoding = .formURLEncoded
    public var contentType: BodyContentType = .form
    public var allowInsecureHTTP = false
    /// Dotted path of the token in the JSON response.
    public var tokenKey = "access_token"
    public var tokenTypeKey = "token_type"
    public var expiresInKey = "expires_in"
    public var expiresAtKey: String?
    /// Lifetime used when the response carries none (seconds).
    public var defaultTTL: Double?
    /// Declared variables (the built-ins included), by exact name.
    public var variables: [String: VariableSpec]
    public var query: [TemplateField] = []
    public var headers: [TemplateField] = []
    /// Replaces the RFC 6749 §4.4 default body when present.
    public var body: [TemplateField]?
    public var refresh = RefreshSettings.Overrides()
    /// `[assertion]`: the JWT signed for each request (SPEC §12).
    public var assertion: AssertionSpec?
    /// `method`: POST (a body) or GET (the `[query]` only, for metadata endpoints).
    public var method: TokenMethod = .post
    /// `[apply]`: how programs use the token on API requests (SPEC §13); nil for the default.
    public var apply: ApplySpec?

    public init(name: String, file: String, isInline: Bool, tokenURL: String, variables: [String: VariableSpec]) {
        self.name = name
        self.file = file
        self.isInline = isInline
        self.tokenURL = tokenURL
        self.variables = variables
    }

    /// The built-in variables for a client authentication style (the seed's defaults).
    ///
    /// Every connector of one style shares the same dictionary storage until it declares a variable of its own, so the
    /// inline connector of every instance does not carry its own copy.
    public static func builtinVariables(for auth: ClientAuthentication) -> [String: VariableSpec] {
        sharedBuiltinVariables[auth] ?? makeBuiltinVariables(for: auth)
    }

    private static let sharedBuiltinVariables = Dictionary(
        uniqueKeysWithValues: ClientAuthentication.allCases.map { ($0, makeBuiltinVariables(for: $0)) }
    )

    private static func makeBuiltinVariables(for auth: ClientAuthentication) -> [String: VariableSpec] {
        var variables = [
            "grant_type": VariableSpec(defaultValue: "client_credentials"),
            "scope": VariableSpec(defaultValue: ""),
            "client_id": VariableSpec(required: true),
            "client_secret": VariableSpec(required: auth.needsSecret, secret: true),
            // RFC 8707 and the common `audience` extension: in the default body when not empty.
            "resource": VariableSpec(defaultValue: ""),
            "audience": VariableSpec(defaultValue: ""),
            // A client certificate (PEM) for RFC 8705; optional with the other styles (certificate-bound tokens).
            "client_certificate": VariableSpec(required: auth == .tlsClientAuth),
            "client_key": VariableSpec(required: auth == .tlsClientAuth, secret: true),
        ]
        if auth.usesAssertion {
            variables["kid"] = VariableSpec(defaultValue: "")
        }
        if auth == .privateKeyJWT {
            variables["private_key"] = VariableSpec(required: true, secret: true)
        }
        return variables
    }

    /// Every `{{name}}` its templates use, with the key of the template (its line: ``line(ofTemplate:)``).
    public var placeholders: [(name: String, key: String)] {
        var found: [(String, String)] = []
        for name in Template.placeholders(in: tokenURL) { found.append((name, "token_url")) }
        for name in Template.placeholders(in: issuer ?? "") { found.append((name, "issuer")) }
        for name in Template.placeholders(in: assertionAudience ?? "") { found.append((name, "assertion_audience")) }
        for (table, fields) in [("query", query), ("headers", headers), ("body", body ?? [])] {
            for field in fields {
                for name in Template.placeholders(in: field.template) { found.append((name, "\(table).\(field.name)")) }
            }
        }
        return found + (assertion?.placeholders ?? [])
    }

    /// The line of the template at `key` as ``placeholders`` names it (`token_url`, `headers.Accept`, …).
    public func line(ofTemplate key: String) -> Int? {
        switch key {
        case "token_url": return tokenURLLine
        case "issuer": return issuerLine
        case "assertion_audience": return assertionAudienceLine
        case _ where key.hasPrefix("assertion."): return assertion?.line(ofTemplate: key)
        default:
            for (table, fields) in [("query", query), ("headers", headers), ("body", body ?? [])] {
                if let field = fields.first(where: { "\(table).\($0.name)" == key }) { return field.line }
            }
            return nil
        }
    }
}

/// One instance: a connector plus the values of its variables, before secrets are read.
///
/// The fields (the connector included) live in one shared, copy-on-write box: a definition is copied
/// into the parse memo, the rendering's key, the resolved instance and the daemon's running state, and each copy
/// costs a pointer. Two copies of one parse compare equal by identity, without looking at the fields.
@dynamicMemberLookup
public struct InstanceDefinition: Sendable, Hashable {
    public struct Fields: Sendable, Hashable {
        /// The file name without `.toml`.
        public var name: String
        /// The path of the file it came from, for messages.
        public var file: String
        public var description: String?
        public var connector: ConnectorDefinition
        /// Variable values as written, by exact (case-sensitive) name.
        public var variables: VariableMap<VariableSource>
        /// Names of variables that are secret (never logged, never cached, hashed in the fingerprint).
        public var secretVariables: Set<String>
        /// The file's text, for the line of a variable in messages of later steps (``line(ofVariable:)``).
        public var source: SourceLines?
        /// The connector's refresh overrides with the instance's applied on top.
        public var refresh: RefreshSettings.Overrides
        /// `[access]`: who may read the token over the socket; nil leaves it to the socket's permissions.
        public var access: AccessRule?
        /// `sink = { path = "…", mode = "0640", owner = "…", group = "…" }`: a file that always holds the raw token.
        public var sink: SinkSpec?
        /// `ca_file`: the instance's own, else its connector's.
        public var caFile: FileReference?
        /// `shared`: whether the instance takes part in the fleet when `[fleet]` is set (SPEC §14).
        public var shared = true
        /// `credential_id`: the id systemd units load the token as (`LoadCredential=ID:…/credentials.sock`); nil means
        /// the instance's name.
        public var credentialID: String?
    }

    @usableFromInline var storage: SharedBox<Fields>

    public init(
        name: String,
        file: String,
        description: String?,
        connector: ConnectorDefinition,
        variables: VariableMap<VariableSource>,
        secretVariables: Set<String>,
        source: SourceLines?,
        refresh: RefreshSettings.Overrides
    ) {
        storage = SharedBox(
            Fields(
                name: name,
                file: file,
                description: description,
                connector: connector,
                variables: variables,
                secretVariables: secretVariables,
                source: source,
                refresh: refresh
            )
        )
    }

    @inlinable
    public subscript<Value>(dynamicMember field: WritableKeyPath<Fields, Value>) -> Value {
        get { storage.value[keyPath: field] }
        set { storage.value[keyPath: field] = newValue }
    }

    /// The variables whose value is another instance's token, with that instance's name, in variable order.
    public var instanceInputs: [(variable: String, instance: String)] {
        self.variables.compactMap { entry in
            if case .instance(let input) = entry.value { return (entry.key, input) }
            return nil
        }
    }

    /// Whether any variable comes from a file, a credential or another instance: its values are read again for
    /// each fetch.
    public var hasLiveInputs: Bool { self.variables.contains { $0.value.isLive } }

    /// The line the variable was written on, for messages about its value (a secret file that cannot be read, an
    /// invalid key); nil for a variable the file does not set.
    public func line(ofVariable name: String) -> Int? {
        guard self.variables[name] != nil, let source = self.source else { return nil }
        return source.line(of: ["variables", name])
    }
}

/// A path written in a config file, with where it was written (for messages about the file it names).
public struct FileReference: Sendable, Hashable {
    public var path: String
    public var file: String
    public var line: Int?

    public init(path: String, file: String, line: Int?) {
        self.path = path
        self.file = file
        self.line = line
    }
}

/// A file sink as written: the raw token, replaced atomically each time it changes.
public struct SinkSpec: Sendable, Hashable {
    public var path: String
    public var mode: UInt16
    public var owner: String?
    public var group: String?
    public var line: Int?

    public init(path: String, mode: UInt16 = 0o600, owner: String? = nil, group: String? = nil, line: Int? = nil) {
        self.path = path
        self.mode = mode
        self.owner = owner
        self.group = group
        self.line = line
    }
}

/// A file sink with its owner and group resolved to ids.
public struct SinkTarget: Sendable, Hashable {
    public var path: String
    public var mode: UInt16
    public var uid: UInt32?
    public var gid: UInt32?

    public init(path: String, mode: UInt16, uid: UInt32?, gid: UInt32?) {
        self.path = path
        self.mode = mode
        self.uid = uid
        self.gid = gid
    }
}

/// `[access] users = […] groups = […] units = […]` as written: names, or numeric ids written as numbers or digit
/// strings, and unit-name globs.
public struct AccessRule: Sendable, Hashable {
    public var users: [String]
    public var groups: [String]
    /// systemd units that may load the token as a credential (SPEC §10), globs allowed; they give no access over the
    /// API socket.
    public var units: [String]
    /// The line of the `[access]` table, for resolution errors.
    public var line: Int?

    public init(users: [String], groups: [String], units: [String] = [], line: Int?) {
        self.users = users
        self.groups = groups
        self.units = units
        self.line = line
    }
}
