import Foundation

/// `instances/<name>.toml`.
extension ConfigParser {
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
        var responseKeys: [(ResponseKey, String)] = []
        // `shared = false`: this instance stays out of the fleet (SPEC §14).
        let shared = reader.bool("shared") ?? true
        // `bound_to_input` at the top (SPEC §11), beside `[refresh] bound_to_input`; the top one wins.
        let boundToInput = reader.bool("bound_to_input")
        // `credential_id`: the id units load the token as over credentials.sock (SPEC §10); the name when absent.
        let credentialID = reader.string("credential_id")
        if let credentialID, !CredentialRequest.isValidCredentialID(credentialID) {
            reader.fail("credential_id", "expected a credential id: printable characters without '/' or spaces, such as \"acme-token\"")
        }
        if document.root["connector"] != nil {
            let connectorName = reader.string("connector") ?? ""
            description = reader.string("description")
            instanceRefresh = parseRefreshOverrides(&reader)
            responseKeys = readResponseKeys(&reader)
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
                    if let source = secretSource(source, key: key, reader: &variableReader, instanceOf: name) {
                        variables[key] = source
                        fromFiles.insert(key)
                    }
                default:
                    variableReader.fail(
                        key,
                        "expected a string, { file = \"…\" }, { credential = \"…\" } or { instance = \"…\" }, found \(value.kindDescription)"
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
            let units = unitList(&accessReader)
            diagnostics += accessReader.finish()
            if users.isEmpty && groups.isEmpty && units.isEmpty {
                diagnostics.append(
                    ConfigDiagnostic(
                        file: file,
                        line: document.line(of: ["access"]),
                        key: "access",
                        message: "an [access] table must name users, groups or units (leave it out to let the socket's permissions decide)"
                    )
                )
            }
            access = AccessRule(users: users, groups: groups, units: units, line: document.line(of: ["access"]))
        }
        diagnostics += reader.finish()

        if let boundToInput { instanceRefresh.boundToInput = boundToInput }
        guard var connector else { return (nil, diagnostics) }
        for (key, path) in responseKeys { key.set(path, in: &connector) }
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
        diagnostics +=
            connector.isInline
            ? shapeProblems(connector, secret: secretVariables, file: file, line: document.line(of:))
            : instanceShapeProblems(connector, secret: secretVariables, file: file, line: document.line(of:))
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
        definition.shared = shared
        definition.credentialID = credentialID
        definition.caFile =
            instanceCAFile
            ?? connector.caFile.map { FileReference(path: $0, file: connector.file, line: connector.caFileLine) }
        return (definition, diagnostics)
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

    /// `[access] units`: unit names or globs (`"report-*.service"`).
    private static func unitList(_ reader: inout TableReader) -> [String] {
        guard let value = reader.raw("units") else { return [] }
        guard case .array(let items) = value else {
            reader.fail("units", "expected an array of unit names or globs, such as [\"backup.service\", \"report-*.service\"]")
            return []
        }
        var units: [String] = []
        for item in items {
            guard case .string(let pattern) = item, UnitPattern.isValid(pattern) else {
                let found = if case .string(let text) = item { "\"\(text)\"" } else { item.kindDescription }
                reader.fail("units", "expected unit names or globs without '/' or spaces, found \(found)")
                return []
            }
            units.append(pattern)
        }
        return units
    }

    /// A `{ file = … }` or `{ credential = … }` value; `{ instance = … }` too when `instanceOf` names the instance
    /// being read (which may not name itself).
    static func secretSource(
        _ table: [String: ConfigDocument.Value],
        key: String,
        reader: inout TableReader,
        instanceOf owner: String? = nil
    ) -> VariableSource? {
        let keys = Set(table.keys)
        if let owner, keys == ["instance"] {
            guard case .string(let input)? = table["instance"], isValidInstanceName(input) else {
                reader.fail(key, "expected an instance name in { instance = \"…\" }")
                return nil
            }
            guard input != owner else {
                reader.fail(key, "an instance cannot take its own token as an input")
                return nil
            }
            return .instance(name: input)
        }
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
            reader.fail(
                key,
                owner == nil
                    ? "expected { file = \"/path\" } or { credential = \"name\" }"
                    : "expected { file = \"/path\" }, { credential = \"name\" } or { instance = \"name\" }"
            )
            return nil
        }
    }
}
