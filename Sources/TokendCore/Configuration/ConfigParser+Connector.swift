import Foundation

/// `connectors/<name>.toml`, and the connector keys an instance file may write inline.
extension ConfigParser {
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
            let secret = Set(parsed.variables.filter { $0.value.secret }.keys)
            diagnostics += shapeProblems(parsed, secret: secret, file: file, line: document.line(of:))
        }
        let hasErrors = diagnostics.contains { $0.severity == .error }
        return (hasErrors ? nil : connector, diagnostics)
    }

    /// Reads the connector keys (SPEC §3) from a connector file or an inline instance.
    ///
    /// `[variables]` is left to the caller: specs in a connector file, values in an instance.
    static func readConnectorKeys(
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
        let method = readMethod(&reader)
        let clientAuth = enumValue(ClientAuthentication.self, "client_auth", &reader) ?? defaultClientAuth(for: method)
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
        connector.method = method
        overrideResponseKeys(&connector, &reader)
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
        readAssertion(&reader, into: &connector)
        connector.apply = readApply(&reader)
        checkMethod(&connector, &reader)
        return connector
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
        for diagnostic in fieldReader.finish() { reader.appendDiagnostic(diagnostic) }
        return fields.sorted { ($0.line ?? 0, $0.name) < ($1.line ?? 0, $1.name) }
    }

    static func undeclaredPlaceholders(_ connector: ConnectorDefinition, file: String) -> [ConfigDiagnostic] {
        let assertionProblems = assertionPlaceholderProblems(connector, file: file)
        let undeclared = connector.placeholders.filter { connector.variables[$0.name] == nil && $0.name != "assertion" }
        guard !undeclared.isEmpty else { return assertionProblems }
        let known = Set(connector.variables.keys)
        return undeclared.map { placeholder in
            var message = "{{\(placeholder.name)}} names no variable"
            if let suggestion = TableReader.closest(to: placeholder.name, in: known) {
                message += " (did you mean '\(suggestion)'?)"
            } else if !connector.isInline {
                message += " (declare it as [variables.\(placeholder.name)])"
            }
            return ConfigDiagnostic(file: file, line: connector.line(ofTemplate: placeholder.key), key: placeholder.key, message: message)
        } + assertionProblems
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
}
