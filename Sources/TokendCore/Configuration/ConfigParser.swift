import Foundation

/// Turns the text of config files into definitions, or into diagnostics that name file, line and key.
public enum ConfigParser {
    /// Whether `name` is a valid instance name: `[A-Za-z0-9][A-Za-z0-9._-]*`.
    public static func isValidInstanceName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCIIAlphanumeric else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCIIAlphanumeric || $0 == "." || $0 == "_" || $0 == "-" }
            && name.utf8.count <= 200
    }

    /// Parses `instances/<name>.toml` in its inline form (connector keys at the top level, values in `[variables]`).
    ///
    /// Returns the definition when there is no error; warnings come back either way.
    public static func parseInstance(
        name: String,
        file: String,
        text: String
    ) -> (definition: InstanceDefinition?, diagnostics: [ConfigDiagnostic]) {
        guard isValidInstanceName(name) else {
            let message = "invalid instance name '\(name)': expected letters, digits, '.', '_' or '-', starting with a letter or digit"
            return (nil, [ConfigDiagnostic(file: file, line: nil, message: message)])
        }
        let document: ConfigDocument
        switch ConfigDocument.parse(file: file, text: text) {
        case .success(let parsed): document = parsed
        case .failure(let diagnostic): return (nil, [diagnostic])
        }
        var reader = TableReader(document: document, path: [], table: document.root)
        var diagnostics: [ConfigDiagnostic] = []

        if reader.raw("connector") != nil {
            reader.fail("connector", "shared connector files are not supported yet; write the connector keys inline")
        }
        let description = reader.string("description")
        let tokenURL = reader.string("token_url")
        if tokenURL == nil, document.root["token_url"] == nil {
            diagnostics.append(
                ConfigDiagnostic(file: file, line: nil, key: "token_url", message: "missing required key")
            )
        }
        let clientAuth = enumValue(ClientAuthentication.self, "client_auth", &reader) ?? .clientSecretPost
        let basicEncoding = enumValue(BasicEncoding.self, "basic_encoding", &reader) ?? .formURLEncoded
        let contentType = enumValue(BodyContentType.self, "content_type", &reader) ?? .form
        let allowInsecureHTTP = reader.bool("allow_insecure_http") ?? false
        let tokenKey = nonEmptyPath("token_key", &reader) ?? "access_token"
        let tokenTypeKey = nonEmptyPath("token_type_key", &reader) ?? "token_type"
        let expiresInKey = nonEmptyPath("expires_in_key", &reader) ?? "expires_in"
        let expiresAtKey = nonEmptyPath("expires_at_key", &reader)
        let defaultTTL = reader.duration("default_ttl")
        if let ttl = defaultTTL, ttl <= 0 {
            reader.fail("default_ttl", "expected a duration greater than zero")
        }

        var variables: [String: VariableSource] = [:]
        var variableLines: [String: Int] = [:]
        var secretVariables: Set<String> = ["client_secret", "private_key"]
        if let table = reader.subtable("variables") {
            var variableReader = TableReader(document: document, path: ["variables"], table: table)
            for key in table.keys.sorted() {
                variableLines[key] = document.line(of: ["variables", key])
                guard let value = variableReader.raw(key) else { continue }
                switch value {
                case .string(let text):
                    variables[key] = .literal(text)
                    if secretVariables.contains(key), !text.isEmpty {
                        variableReader.warn(key, "secret written inline; prefer { file = \"…\" } or { credential = \"…\" }")
                    }
                case .integer(let number):
                    variables[key] = .literal(String(number))
                case .table(let source):
                    if let source = secretSource(source, key: key, reader: &variableReader) {
                        variables[key] = source
                        secretVariables.insert(key)
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

        let refresh = parseRefreshOverrides(&reader)
        diagnostics += reader.finish()

        for required in ["client_id"] + (clientAuth.needsSecret ? ["client_secret"] : []) where variables[required] == nil {
            diagnostics.append(
                ConfigDiagnostic(
                    file: file,
                    line: document.line(of: ["variables"]),
                    key: "variables.\(required)",
                    message: "missing required variable"
                )
            )
        }
        if let tokenURL {
            for name in Template.placeholders(in: tokenURL)
            where variables[name] == nil && InstanceDefinition.builtinDefaults[name] == nil {
                diagnostics.append(
                    ConfigDiagnostic(
                        file: file,
                        line: document.line(of: ["token_url"]),
                        key: "token_url",
                        message: "{{\(name)}} names no variable"
                    )
                )
            }
        }

        guard let tokenURL, !diagnostics.contains(where: { $0.severity == .error }) else {
            return (nil, diagnostics)
        }
        let definition = InstanceDefinition(
            name: name,
            file: file,
            description: description,
            tokenURL: tokenURL,
            clientAuth: clientAuth,
            basicEncoding: basicEncoding,
            contentType: contentType,
            allowInsecureHTTP: allowInsecureHTTP,
            tokenKey: tokenKey,
            tokenTypeKey: tokenTypeKey,
            expiresInKey: expiresInKey,
            expiresAtKey: expiresAtKey,
            defaultTTL: defaultTTL,
            variables: variables,
            secretVariables: secretVariables,
            variableLines: variableLines,
            refresh: refresh
        )
        return (definition, diagnostics)
    }

    /// Parses `tokend.toml`. Any error rejects the whole file.
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
            diagnostics += httpReader.finish()
        }
        diagnostics += reader.finish()
        let errors = diagnostics.filter { $0.severity == .error }
        return errors.isEmpty ? (settings, []) : (nil, errors)
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
        // Unknown keys in [refresh] are reported with the enclosing reader's findings.
        let diagnostics = refresh.finish()
        for diagnostic in diagnostics {
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
