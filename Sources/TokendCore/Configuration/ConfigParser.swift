import Foundation

/// Turns the text of config files into definitions, or into diagnostics that name file, line and key.
public enum ConfigParser {
    /// Whether `name` is a valid instance (or connector) name: `[A-Za-z0-9][A-Za-z0-9._-]*`.
    public static func isValidInstanceName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCIIAlphanumeric else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCIIAlphanumeric || $0 == "." || $0 == "_" || $0 == "-" }
            && name.utf8.count <= 200
    }

    /// What a referencing instance may find about its connector.
    public enum ConnectorLookup: Sendable, Hashable {
        case found(ConnectorDefinition)
        /// The connector file exists but has errors (reported on their own).
        case invalid
        case missing
    }

    // MARK: - Connectors

    /// Parses `connectors/<name>.toml`.
    public static func parseConnector(
        name: String,
        file: String,
        text: String
    ) -> (connector: ConnectorDefinition?, diagnostics: [ConfigDiagnostic]) {
        let document: ConfigDocument
        switch open(name: name, file: file, text: text, what: "connector") {
        case .success(let parsed): document = parsed
        case .failure(let diagnostic): return (nil, [diagnostic])
        }
        var reader = TableReader(document: document, path: [], table: document.root)
        var diagnostics: [ConfigDiagnostic] = []
        var connector = readConnectorKeys(&reader, name: name, inline: false, diagnostics: &diagnostics)
        if let table = reader.subtable("variables") {
            var variables = TableReader(document: document, path: ["variables"], table: table)
            for key in table.keys.sorted() {
                guard let specTable = variables.subtable(key) else { continue }
                guard isValidVariableName(key) else {
                    variables.fail(key, "invalid variable name: expected letters, digits and '_'")
                    continue
                }
                var specReader = TableReader(document: document, path: ["variables", key], table: specTable)
                var spec = connector?.variables[key] ?? VariableSpec()
                if let required = specReader.bool("required") {
                    spec.required = required
                    // A built-in's default (audience, resource, …) gives way to an explicit `required = true`.
                    if required, specTable["default"] == nil { spec.defaultValue = nil }
                }
                if let secret = specReader.bool("secret") { spec.secret = secret }
                spec.description = specReader.string("description") ?? spec.description
                if let value = specReader.raw("default") {
                    switch value {
                    case .string(let text): spec.defaultValue = text
                    case .integer(let number): spec.defaultValue = String(number)
                    default: specReader.fail("default", "expected a string, found \(value.kindDescription)")
                    }
                }
                if spec.required && spec.defaultValue != nil {
                    specReader.fail("required", "a variable with a default cannot be required")
                }
                diagnostics += specReader.finish()
                connector?.variables[key] = spec
            }
            diagnostics += variables.finish()
        }
        diagnostics += reader.finish()
        if let parsed = connector {
            diagnostics += undeclaredPlaceholders(parsed, file: file)
        }
        let hasErrors = diagnostics.contains { $0.severity == .error }
        return (hasErrors ? nil : connector, diagnostics)
    }

    // MARK: - Instances

    private static let usualSecretVariables: Set<String> = ["client_secret", "private_key", "client_key"]

    /// Parses `instances/<name>.toml`: with `connector = "…"` it fills in that connector's variables; without, the
    /// connector keys are written inline.
    ///
    /// Returns the definition when there is no error; warnings come back either way.
    public static func parseInstance(
        name: String,
        file: String,
        text: String,
        connectors: (String) -> ConnectorLookup = { _ in .missing }
    ) -> (definition: InstanceDefinition?, diagnostics: [ConfigDiagnostic]) {
        let document: ConfigDocument
        switch open(name: name, file: file, text: text, what: "instance") {
        case .success(let parsed): document = parsed
        case .failure(let diagnostic): return (nil, [diagnostic])
        }
        var reader = TableReader(document: document, path: [], table: document.root)
        var diagnostics: [ConfigDiagnostic] = []

        let connector: ConnectorDefinition?
        let description: String?
        var instanceRefresh = RefreshSettings.Overrides()
        var instanceCAFile: FileReference?
        if document.root["connector"] != nil {
            let connectorName = reader.string("connector") ?? ""
            description = reader.string("description")
            instanceRefresh = parseRefreshOverrides(&reader)
            instanceCAFile = absolutePath("ca_file", &reader).map {
                FileReference(path: $0, file: file, line: document.line(of: ["ca_file"]))
            }
            switch connectors(connectorName) {
            case .found(let found):
                connector = found
            case .invalid:
                reader.fail("connector", "connector '\(connectorName)' has errors (see its file); this instance waits for it")
                connector = nil
            case .missing:
                reader.fail("connector", "no connector named '\(connectorName)' (expected connectors/\(connectorName).toml)")
                connector = nil
            }
        } else {
            connector = readConnectorKeys(&reader, name: name, inline: true, diagnostics: &diagnostics)
            description = connector?.description
        }

        var variables = VariableMap<VariableSource>()
        var fromFiles: Set<String> = []
        if let table = reader.subtable("variables") {
            var variableReader = TableReader(document: document, path: ["variables"], table: table)
            for key in table.keys.sorted() {
                guard let value = variableReader.raw(key) else { continue }
                if let connector, !connector.isInline, connector.variables[key] == nil {
                    var message = "connector '\(connector.name)' has no variable '\(key)'"
                    if let suggestion = TableReader.closest(to: key, in: Set(connector.variables.keys)) {
                        message += " (did you mean '\(suggestion)'?)"
                    }
                    variableReader.fail(key, message)
                    continue
                }
                switch value {
                case .string(let text):
                    variables[key] = .literal(text)
                case .integer(let number):
                    variables[key] = .literal(String(number))
                case .table(let source):
                    if let source = secretSource(source, key: key, reader: &variableReader) {
                        variables[key] = source
                        fromFiles.insert(key)
                    }
                default:
                    variableReader.fail(
                        key,
                        "expected a string, { file = \"…\" } or { credential = \"…\" }, found \(value.kindDescription)"
                    )
                }
            }
            diagnostics += variableReader.finish()
        }
        var sink: SinkSpec?
        if let table = reader.subtable("sink") {
            var sinkReader = TableReader(document: document, path: ["sink"], table: table)
            let line = document.line(of: ["sink"])
            let path = sinkReader.string("path")
            var spec = SinkSpec(path: path ?? "", line: line)
            if let mode = sinkReader.string("mode") {
                if let parsed = UInt16(mode, radix: 8), parsed <= 0o777, parsed & 0o002 == 0 {
                    spec.mode = parsed
                } else {
                    sinkReader.fail("mode", "expected an octal mode without write access for others, such as \"0640\"")
                }
            }
            spec.owner = sinkReader.string("owner")
            spec.group = sinkReader.string("group")
            if path == nil {
                sinkReader.fail("path", "missing: the file the token is written to")
            } else if path?.hasPrefix("/") != true || path?.hasSuffix("/") == true {
                sinkReader.fail("path", "expected an absolute file path")
            }
            diagnostics += sinkReader.finish()
            sink = spec
        }
        var access: AccessRule?
        if let table = reader.subtable("access") {
            var accessReader = TableReader(document: document, path: ["access"], table: table)
            let users = identityList("users", &accessReader)
            let groups = identityList("groups", &accessReader)
            diagnostics += accessReader.finish()
            if users.isEmpty && groups.isEmpty {
                diagnostics.append(
                    ConfigDiagnostic(
                        file: file,
                        line: document.line(of: ["access"]),
                        key: "access",
                        message: "an [access] table must name users or groups (leave it out to let the socket's permissions decide)"
                    )
                )
            }
            access = AccessRule(users: users, groups: groups, line: document.line(of: ["access"]))
        }
        diagnostics += reader.finish()

        guard var connector else { return (nil, diagnostics) }
        if connector.isInline {
            // Inline: every variable written is declared; the built-ins keep their defaults.
            for key in variables.keys where connector.variables[key] == nil {
                connector.variables[key] = VariableSpec()
            }
            diagnostics += undeclaredPlaceholders(connector, file: file)
        }
        var secretVariables = fromFiles.union(["client_secret", "private_key"])
        for (key, spec) in connector.variables where spec.secret { secretVariables.insert(key) }
        // The usual set, shared rather than one copy per instance.
        if secretVariables == usualSecretVariables { secretVariables = usualSecretVariables }
        for (key, source) in variables.sorted(by: { $0.key < $1.key }) where secretVariables.contains(key) {
            if case .literal(let text) = source, !text.isEmpty {
                diagnostics.append(
                    ConfigDiagnostic(
                        file: file,
                        line: document.line(of: ["variables", key]),
                        key: "variables.\(key)",
                        message: "secret written inline; prefer { file = \"…\" } or { credential = \"…\" }",
                        severity: .warning
                    )
                )
            }
        }
        for (key, spec) in connector.variables.sorted(by: { $0.key < $1.key })
        where spec.required && spec.defaultValue == nil && variables[key] == nil {
            diagnostics.append(
                ConfigDiagnostic(
                    file: file,
                    line: document.line(of: ["variables"]),
                    key: "variables.\(key)",
                    message: "missing required variable"
                        + (connector.isInline ? "" : " (connector '\(connector.name)' requires it)")
                )
            )
        }

        guard !diagnostics.contains(where: { $0.severity == .error }) else { return (nil, diagnostics) }
        var definition = InstanceDefinition(
            name: name,
            file: file,
            description: description,
            connector: connector,
            variables: variables,
            secretVariables: secretVariables,
            source: document.source,
            refresh: connector.refresh.overridden(by: instanceRefresh)
        )
        definition.access = access
        definition.sink = sink
        definition.caFile =
            instanceCAFile
            ?? connector.caFile.map { FileReference(path: $0, file: connector.file, line: connector.caFileLine) }
        return (definition, diagnostics)
    }

    // MARK: - Daemon settings

    /// Parses `tokend.toml`.
    ///
    /// Any error rejects the whole file.
    public static func parseSettings(file: String, text: String) -> (settings: DaemonSettings?, errors: [ConfigDiagnostic]) {
        let document: ConfigDocument
        switch ConfigDocument.parse(file: file, text: text) {
        case .success(let parsed): document = parsed
        case .failure(let diagnostic): return (nil, [diagnostic])
        }
        var settings = DaemonSettings()
        var reader = TableReader(document: document, path: [], table: document.root)
        var diagnostics: [ConfigDiagnostic] = []
        if let mode = reader.string("socket_mode") {
            if let parsed = UInt16(mode, radix: 8), parsed <= 0o777 {
                settings.socketMode = parsed
            } else {
                reader.fail("socket_mode", "expected an octal mode such as \"0660\", found \"\(mode)\"")
            }
        }
        settings.socketGroup = reader.string("socket_group")
        settings.adminGroup = reader.string("admin_group")
        if let level = reader.string("log_level") {
            if DaemonSettings.logLevels.contains(level) {
                settings.logLevel = level
            } else {
                reader.fail("log_level", "expected one of \(DaemonSettings.logLevels.joined(separator: ", "))")
            }
        }
        if let timeout = reader.duration("startup_timeout") { settings.startupTimeout = timeout }
        let overrides = parseRefreshOverrides(&reader) { refresh in
            if let value = refresh.integer("max_concurrent", range: 1...100_000) {
                settings.refresh.maxConcurrent = value
            }
            if let value = refresh.integer("per_endpoint_concurrent", range: 1...100_000) {
                settings.refresh.perEndpointConcurrent = value
            }
        }
        settings.refresh = settings.refresh.applying(overrides)
        if let http = reader.subtable("http") {
            var httpReader = TableReader(document: document, path: ["http"], table: http)
            if let value = httpReader.duration("connect_timeout") { settings.connectTimeout = max(value, 0.001) }
            if let value = httpReader.duration("timeout") { settings.requestTimeout = max(value, 0.001) }
            if let proxy = httpReader.string("proxy") {
                if ProxySettings.parse(proxy) != nil {
                    settings.proxy = proxy
                } else {
                    httpReader.fail("proxy", "expected an http://host:port URL without credentials, found \"\(proxy)\"")
                }
            }
            if let value = httpReader.raw("no_proxy") {
                if case .array(let items) = value {
                    var hosts: [String] = []
                    for case .string(let host) in items where !host.isEmpty { hosts.append(host) }
                    if hosts.count == items.count { settings.noProxy = hosts }
                }
                if settings.noProxy == nil {
                    httpReader.fail("no_proxy", "expected an array of host names, such as [\"localhost\", \".internal.example\"]")
                }
            }
            diagnostics += httpReader.finish()
        }
        diagnostics += reader.finish()
        let errors = diagnostics.filter { $0.severity == .error }
        return errors.isEmpty ? (settings, []) : (nil, errors)
    }

    // MARK: - Shared pieces

    /// Reads the connector keys (SPEC §3) from a connector file or an inline instance.
    ///
    /// `[variables]` is left to the caller: specs in a connector file, values in an instance.
    private static func readConnectorKeys(
        _ reader: inout TableReader,
        name: String,
        inline: Bool,
        diagnostics: inout [ConfigDiagnostic]
    ) -> ConnectorDefinition? {
        let document = reader.document
        let description = reader.string("description")
        let tokenURL = reader.string("token_url")
        let issuer = reader.string("issuer")
        if tokenURL == nil, document.root["token_url"] == nil, issuer == nil, document.root["issuer"] == nil {
            diagnostics.append(
                ConfigDiagnostic(
                    file: document.file,
                    line: 1,
                    key: "token_url",
                    message: inline
                        ? "missing required key: token_url or issuer (or name a shared connector with connector = \"…\")"
                        : "missing required key: token_url or issuer"
                )
            )
        }
        if tokenURL != nil, issuer != nil {
            reader.fail("issuer", "give token_url or issuer, not both (issuer discovers the token URL)")
        }
        let clientAuth = enumValue(ClientAuthentication.self, "client_auth", &reader) ?? .clientSecretPost
        var connector = ConnectorDefinition(
            name: name,
            file: document.file,
            isInline: inline,
            tokenURL: tokenURL ?? "",
            variables: ConnectorDefinition.builtinVariables(for: clientAuth)
        )
        connector.description = description
        connector.source = document.source
        connector.clientAuth = clientAuth
        connector.issuer = issuer
        connector.caFile = absolutePath("ca_file", &reader)
        connector.assertionAudience = reader.string("assertion_audience")
        if connector.assertionAudience != nil, !clientAuth.usesAssertion {
            reader.fail("assertion_audience", "only used with client_auth = \"private_key_jwt\" or \"client_secret_jwt\"")
        }
        connector.basicEncoding = enumValue(BasicEncoding.self, "basic_encoding", &reader) ?? .formURLEncoded
        connector.contentType = enumValue(BodyContentType.self, "content_type", &reader) ?? .form
        connector.allowInsecureHTTP = reader.bool("allow_insecure_http") ?? false
        connector.tokenKey = nonEmptyPath("token_key", &reader) ?? "access_token"
        connector.tokenTypeKey = nonEmptyPath("token_type_key", &reader) ?? "token_type"
        connector.expiresInKey = nonEmptyPath("expires_in_key", &reader) ?? "expires_in"
        connector.expiresAtKey = nonEmptyPath("expires_at_key", &reader)
        connector.defaultTTL = reader.duration("default_ttl")
        if let ttl = connector.defaultTTL, ttl <= 0 {
            reader.fail("default_ttl", "expected a duration greater than zero")
        }
        connector.query = templateFields("query", &reader) ?? []
        connector.headers = templateFields("headers", &reader) ?? []
        for field in connector.headers where !isHeaderName(field.name) {
            reader.fail("headers", "'\(field.name)' is not a valid header name")
        }
        var seenHeaders: Set<String> = []
        for field in connector.headers where !seenHeaders.insert(field.name.lowercased()).inserted {
            reader.fail("headers", "header '\(field.name)' is given twice (header names are case-insensitive)")
        }
        for field in connector.headers
        where field.template.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) {
            reader.fail("headers", "the value of '\(field.name)' contains a line break")
        }
        connector.body = templateFields("body", &reader)
        connector.refresh = parseRefreshOverrides(&reader)
        return connector
    }

    /// A list of user or group names (or numeric ids).
    private static func identityList(_ key: String, _ reader: inout TableReader) -> [String] {
        guard let value = reader.raw(key) else { return [] }
        guard case .array(let items) = value else {
            reader.fail(key, "expected an array of names or numeric ids, such as [\"billing\", 1001]")
            return []
        }
        var names: [String] = []
        for item in items {
            switch item {
            case .string(let name) where !name.isEmpty: names.append(name)
            case .integer(let id) where id >= 0 && id < Int(UInt32.max): names.append(String(id))
            default:
                reader.fail(key, "expected names or numeric ids, found \(item.kindDescription)")
                return []
            }
        }
        return names
    }

    /// `[query]`, `[headers]` or `[body]`: string values, kept in the order they were written.
    private static func templateFields(_ key: String, _ reader: inout TableReader) -> [TemplateField]? {
        guard let table = reader.subtable(key) else { return nil }
        var fields: [TemplateField] = []
        var fieldReader = TableReader(document: reader.document, path: [key], table: table)
        for name in table.keys {
            let line = reader.document.line(of: [key, name])
            switch fieldReader.raw(name) {
            case .string(let text)?: fields.append(TemplateField(name: name, template: text, line: line))
            case .integer(let number)?: fields.append(TemplateField(name: name, template: String(number), line: line))
            case .bool(let flag)?: fields.append(TemplateField(name: name, template: String(flag), line: line))
            case let other?: fieldReader.fail(name, "expected a string, found \(other.kindDescription)")
            case nil: break
            }
        }
        for diagnostic in fieldReader.finish() { reader.report(diagnostic) }
        return fields.sorted { ($0.line ?? 0, $0.name) < ($1.line ?? 0, $1.name) }
    }

    private static func undeclaredPlaceholders(_ connector: ConnectorDefinition, file: String) -> [ConfigDiagnostic] {
        let undeclared = connector.placeholders.filter { connector.variables[$0.name] == nil }
        guard !undeclared.isEmpty else { return [] }
        let known = Set(connector.variables.keys)
        return undeclared.map { placeholder in
            var message = "{{\(placeholder.name)}} names no variable"
            if let suggestion = TableReader.closest(to: placeholder.name, in: known) {
                message += " (did you mean '\(suggestion)'?)"
            } else if !connector.isInline {
                message += " (declare it as [variables.\(placeholder.name)])"
            }
            return ConfigDiagnostic(file: file, line: connector.line(ofTemplate: placeholder.key), key: placeholder.key, message: message)
        }
    }

    private static func parseRefreshOverrides(
        _ reader: inout TableReader,
        daemonKeys: (inout TableReader) -> Void = { _ in }
    ) -> RefreshSettings.Overrides {
        var overrides = RefreshSettings.Overrides()
        guard let table = reader.subtable("refresh") else { return overrides }
        var refresh = TableReader(document: reader.document, path: ["refresh"], table: table)
        daemonKeys(&refresh)
        overrides.ratio = refresh.fraction("ratio", range: 0.05...1)
        overrides.minLead = refresh.duration("min_lead")
        overrides.jitter = refresh.fraction("jitter", range: 0...0.5)
        overrides.minInterval = refresh.duration("min_interval")
        overrides.retryInitial = refresh.duration("retry_initial")
        overrides.retryMax = refresh.duration("retry_max")
        overrides.permanentRetry = refresh.duration("permanent_retry")
        if let initial = overrides.retryInitial, initial <= 0 {
            refresh.fail("retry_initial", "expected a duration greater than zero")
        }
        if let initial = overrides.retryInitial, let maximum = overrides.retryMax, maximum < initial {
            refresh.fail("retry_max", "expected a duration no shorter than retry_initial")
        }
        for diagnostic in refresh.finish() {
            reader.report(diagnostic)
        }
        return overrides
    }

    private static func enumValue<Value: RawRepresentable & CaseIterable>(
        _ type: Value.Type,
        _ key: String,
        _ reader: inout TableReader
    ) -> Value? where Value.RawValue == String {
        guard let text = reader.string(key) else { return nil }
        if let value = Value(rawValue: text) { return value }
        let choices = Value.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
        reader.fail(key, "expected one of \(choices), found \"\(text)\"")
        return nil
    }

    /// An absolute file path (`ca_file`).
    static func absolutePath(_ key: String, _ reader: inout TableReader) -> String? {
        guard let path = reader.string(key) else { return nil }
        guard path.hasPrefix("/"), !path.hasSuffix("/") else {
            reader.fail(key, "expected an absolute file path, found \"\(path)\"")
            return nil
        }
        return path
    }

    private static func nonEmptyPath(_ key: String, _ reader: inout TableReader) -> String? {
        guard let text = reader.string(key) else { return nil }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard !text.isEmpty, parts.allSatisfy({ !$0.isEmpty }) else {
            reader.fail(key, "expected a dotted key path such as \"access_token\" or \"data.token\"")
            return nil
        }
        return text
    }

    private static func secretSource(
        _ table: [String: ConfigDocument.Value],
        key: String,
        reader: inout TableReader
    ) -> VariableSource? {
        let keys = Set(table.keys)
        switch (table["file"], table["credential"]) {
        case (.string(let path)?, nil) where keys.count == 1:
            guard path.hasPrefix("/") else {
                reader.fail(key, "expected an absolute path in { file = \"…\" }, found \"\(path)\"")
                return nil
            }
            return .file(path: path)
        case (nil, .string(let name)?) where keys.count == 1:
            guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
                reader.fail(key, "expected a credential name without '/', found \"\(name)\"")
                return nil
            }
            return .credential(name: name)
        default:
            reader.fail(key, "expected { file = \"/path\" } or { credential = \"name\" }")
            return nil
        }
    }

    /// Checks the name a file gives its connector or instance, then parses the TOML.
    private static func open(name: String, file: String, text: String, what: String) -> Result<ConfigDocument, ConfigDiagnostic> {
        guard isValidInstanceName(name) else {
            return .failure(
                ConfigDiagnostic(
                    file: file,
                    line: nil,
                    message: "invalid \(what) name '\(name)': expected letters, digits, '.', '_' or '-', starting with a letter or digit"
                )
            )
        }
        return ConfigDocument.parse(file: file, text: text)
    }

    static func isValidVariableName(_ name: String) -> Bool {
        !name.isEmpty && name.unicodeScalars.allSatisfy { $0.isASCIIAlphanumeric || $0 == "_" || $0 == "-" }
    }

    /// RFC 9110 `token`: the characters a header name may use.
    static func isHeaderName(_ name: String) -> Bool {
        !name.isEmpty
            && name.unicodeScalars.allSatisfy { $0.isASCIIAlphanumeric || "!#$%&'*+-.^_`|~".unicodeScalars.contains($0) }
    }
}

extension TableReader {
    mutating func report(_ diagnostic: ConfigDiagnostic) {
        appendDiagnostic(diagnostic)
    }
}

extension Unicode.Scalar {
    var isASCIIAlphanumeric: Bool {
        (0x30...0x39).contains(value) || (0x41...0x5A).contains(value) || (0x61...0x7A).contains(value)
    }
}
