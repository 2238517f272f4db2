/// `method`, the response keys (with `token_key = ""`) and `[apply]`: the request shaping keys of a connector, and
/// the rules that tie them to which variables are secret.
extension ConfigParser {
    /// Reads `method` before the client authentication: a GET connector without `client_auth` authenticates with
    /// nothing of tokend's own (`none`), since a GET has no body to carry a secret.
    static func readMethod(_ reader: inout TableReader) -> TokenMethod {
        guard let text = reader.string("method") else { return .post }
        if let method = TokenMethod(rawValue: text) { return method }
        reader.fail("method", "expected \"POST\" or \"GET\", found \"\(text)\"")
        return .post
    }

    /// The default client authentication for `method`.
    static func defaultClientAuth(for method: TokenMethod) -> ClientAuthentication {
        method == .get ? .none : .clientSecretPost
    }

    /// The checks of a GET connector that need no variables: no `[body]`, an authentication that needs no body.
    ///
    /// A GET sends only its `[query]`, so `client_id` is optional there (empty and left out unless given).
    static func checkMethod(_ connector: inout ConnectorDefinition, _ reader: inout TableReader) {
        guard connector.method == .get else { return }
        if connector.clientAuth != .clientSecretBasic {
            connector.variables["client_id"] = VariableSpec(defaultValue: "")
        }
        if connector.body != nil {
            reader.fail("body", "a GET request has no body; put its parameters in [query]")
        }
        if !TokenMethod.getAuthentications.contains(connector.clientAuth) {
            let allowed = TokenMethod.getAuthentications.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            reader.fail(
                "client_auth",
                "\"\(connector.clientAuth.rawValue)\" sends credentials in the body, and a GET has none; use \(allowed) "
                    + "(or put the credential in [headers])"
            )
        }
    }

    /// A response key path: dotted keys such as `"access_token"` or `"data.token"`; `token_key` may also be `""`
    /// (the whole body of a `text/plain` answer is the token).
    static func responseKeyPath(_ key: ResponseKey, _ reader: inout TableReader) -> String? {
        guard let text = reader.string(key.rawValue) else { return nil }
        if text.isEmpty, key == .tokenKey { return text }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard !text.isEmpty, parts.allSatisfy({ !$0.isEmpty }) else {
            let plain = key == .tokenKey ? ", or \"\" for a text/plain body" : ""
            reader.fail(key.rawValue, "expected a dotted key path such as \"access_token\" or \"data.token\"\(plain)")
            return nil
        }
        return text
    }

    /// The response keys a connector (or an instance of a shared connector) writes, over what it had.
    static func overrideResponseKeys(_ connector: inout ConnectorDefinition, _ reader: inout TableReader) {
        for (key, path) in readResponseKeys(&reader) { key.set(path, in: &connector) }
    }

    /// The response keys a file writes, in ``ResponseKey`` order.
    static func readResponseKeys(_ reader: inout TableReader) -> [(ResponseKey, String)] {
        ResponseKey.allCases.compactMap { key in responseKeyPath(key, &reader).map { (key, $0) } }
    }

    /// `[apply]`: header name, value template, exposed variables.
    static func readApply(_ reader: inout TableReader) -> ApplySpec? {
        guard let table = reader.subtable("apply") else { return nil }
        var applyReader = TableReader(document: reader.document, path: ["apply"], table: table)
        var spec = ApplySpec()
        if let header = applyReader.string("header") {
            if isHeaderName(header) {
                spec.header = header
            } else {
                applyReader.fail("header", "'\(header)' is not a valid header name")
            }
        }
        if let value = applyReader.string("value") {
            if value.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) {
                applyReader.fail("value", "contains a line break")
            } else if !Template.placeholders(in: value).contains("token") {
                applyReader.fail("value", "never uses {{token}}: the header would not carry the token")
            } else {
                spec.value = value
            }
        }
        if let raw = applyReader.raw("expose") {
            if case .array(let items) = raw, items.allSatisfy({ if case .string = $0 { true } else { false } }) {
                spec.expose = items.compactMap { if case .string(let name) = $0 { name } else { nil } }
            } else {
                applyReader.fail("expose", "expected an array of variable names, such as [\"url\"]")
            }
        }
        for diagnostic in applyReader.finish() { reader.appendDiagnostic(diagnostic) }
        return spec
    }

    /// The problems of a connector's shaping keys once its variables are known: a secret in the query of a GET, a
    /// secret (or unknown variable) in `[apply] value` or `expose`.
    ///
    /// `secret` is the set of secret variable names; `line` finds a key's line in the connector's file.
    static func shapeProblems(
        _ connector: ConnectorDefinition,
        secret: Set<String>,
        file: String,
        line: ([String]) -> Int?
    ) -> [ConfigDiagnostic] {
        var problems: [ConfigDiagnostic] = []
        func problem(_ path: [String], _ message: String) {
            problems.append(ConfigDiagnostic(file: file, line: line(path), key: path.joined(separator: "."), message: message))
        }
        if connector.method == .get {
            for field in connector.query {
                for name in Template.placeholders(in: field.template) where secret.contains(name) {
                    problem(
                        ["query", field.name],
                        "secret variable '\(name)' in the query of a GET request (query strings reach logs); "
                            + "send it in [headers] or with client_auth = \"client_secret_basic\""
                    )
                }
            }
        }
        guard let apply = connector.apply else { return problems }
        for name in Template.placeholders(in: apply.value) where !ApplySpec.tokenPlaceholders.contains(name) {
            if secret.contains(name) {
                problem(["apply", "value"], "secret variable '\(name)' in the header value programs read with the token")
            } else if connector.variables[name] == nil {
                problem(["apply", "value"], "{{\(name)}} names no variable (besides variables: {{token}}, {{token_type}})")
            }
        }
        for name in apply.expose {
            if secret.contains(name) {
                problem(["apply", "expose"], "'\(name)' is a secret variable; only non-secret variables can be exposed")
            } else if connector.variables[name] == nil {
                problem(["apply", "expose"], "'\(name)' names no variable")
            }
        }
        return problems
    }

    /// ``shapeProblems(_:secret:file:line:)`` for an instance of a shared connector: only the variables the instance
    /// makes secret (read from a file) and the connector does not, reported at the instance's variable.
    static func instanceShapeProblems(
        _ connector: ConnectorDefinition,
        secret: Set<String>,
        file: String,
        line: ([String]) -> Int?
    ) -> [ConfigDiagnostic] {
        let connectorSecret = Set(connector.variables.filter { $0.value.secret }.keys).union(["client_secret", "private_key"])
        let onlyHere = secret.subtracting(connectorSecret)
        guard !onlyHere.isEmpty else { return [] }
        let found = shapeProblems(connector, secret: onlyHere, file: connector.file, line: { _ in nil })
        var reported: Set<String> = []
        return found.compactMap { diagnostic in
            guard let name = onlyHere.first(where: { diagnostic.message.contains("'\($0)'") }), reported.insert(name).inserted else {
                return nil
            }
            return ConfigDiagnostic(
                file: file,
                line: line(["variables", name]),
                key: "variables.\(name)",
                message:
                    "read from a file or credential, so secret; connector '\(connector.name)' \(diagnostic.key ?? ""): \(diagnostic.message)"
            )
        }
    }
}
