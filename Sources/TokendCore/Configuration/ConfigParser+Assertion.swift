import Foundation

/// A connector's `[assertion]` table (SPEC §12), in a connector file or an inline instance.
extension ConfigParser {
    /// Reads `[assertion]` into the connector and declares what it signs with: `private_key` (or `client_secret`
    /// for HS256), and `client_certificate` when a thumbprint is asked for.
    static func readAssertion(_ reader: inout TableReader, into connector: inout ConnectorDefinition) {
        guard let table = reader.subtable("assertion") else { return }
        let document = reader.document
        var assertion = TableReader(document: document, path: ["assertion"], table: table)
        defer { for diagnostic in assertion.finish() { reader.appendDiagnostic(diagnostic) } }
        let algorithmText = assertion.string("alg")
        guard let algorithmText else {
            if table["alg"] == nil {
                reader.fail("assertion", "missing required key: alg (RS256, PS256, ES256, EdDSA or HS256)")
            }
            return
        }
        guard let algorithm = AssertionAlgorithm(rawValue: algorithmText) else {
            let choices = AssertionAlgorithm.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            assertion.fail("alg", "expected one of \(choices), found \"\(algorithmText)\"")
            return
        }
        var spec = AssertionSpec(algorithm: algorithm)
        spec.line = document.line(of: ["assertion"])
        spec.algorithmLine = document.line(of: ["assertion", "alg"])
        if let lifetime = assertion.duration("lifetime") {
            if lifetime < 1 || lifetime > AssertionSpec.maximumLifetime {
                assertion.fail("lifetime", "expected a duration from 1s to 1h (an assertion is a short-lived proof)")
            } else {
                spec.lifetime = lifetime.rounded(.down)
            }
        }
        spec.keyID = assertion.string("kid")
        spec.keyIDLine = document.line(of: ["assertion", "kid"])
        if spec.keyID == nil, connector.clientAuth.usesAssertion {
            spec.keyID = "{{kid}}"
        }
        spec.x5tS256 = assertion.bool("x5t_s256") ?? false
        spec.x5t = assertion.bool("x5t") ?? false
        if algorithm == .hs256 {
            for key in ["x5t_s256", "x5t"] where table[key] == .bool(true) {
                assertion.fail(key, "a certificate thumbprint names a public key; HS256 signs with a shared secret")
            }
        }
        switch (connector.clientAuth, algorithm) {
        case (.clientSecretJWT, let algorithm) where algorithm != .hs256:
            assertion.fail("alg", "client_secret_jwt signs with the client secret (HS256); use client_auth = \"private_key_jwt\"")
        case (.privateKeyJWT, .hs256):
            assertion.fail("alg", "private_key_jwt signs with a private key; use client_auth = \"client_secret_jwt\" for HS256")
        default:
            break
        }
        if let claims = assertion.subtable("claims") {
            spec.claims = readClaims(claims, document: document, into: &assertion)
        }
        declareAssertionVariables(spec, in: &connector)
        connector.assertion = spec
    }

    /// `[assertion.claims]`: templates, or numbers, booleans and arrays of templates written as such.
    private static func readClaims(
        _ table: [String: ConfigDocument.Value],
        document: ConfigDocument,
        into parent: inout TableReader
    ) -> [AssertionSpec.Claim] {
        var reader = TableReader(document: document, path: ["assertion", "claims"], table: table)
        var claims: [AssertionSpec.Claim] = []
        for name in table.keys {
            let line = document.line(of: ["assertion", "claims", name])
            guard let raw = reader.raw(name) else { continue }
            if AssertionSpec.reservedClaims.contains(name) {
                reader.fail(name, "tokend sets \(name) for each signing (jti, iat, nbf and exp: see lifetime)")
                continue
            }
            let value: AssertionSpec.ClaimTemplate
            switch raw {
            case .string(let text): value = .text(text)
            case .integer(let number): value = .integer(number)
            case .bool(let flag): value = .boolean(flag)
            case .array(let items):
                let texts = items.compactMap { item -> String? in
                    if case .string(let text) = item { return text }
                    return nil
                }
                guard texts.count == items.count else {
                    reader.fail(name, "expected an array of strings")
                    continue
                }
                value = .texts(texts)
            default:
                reader.fail(name, "expected a string, an integer, a boolean or an array of strings, found \(raw.kindDescription)")
                continue
            }
            claims.append(AssertionSpec.Claim(name: name, value: value, line: line))
        }
        for diagnostic in reader.finish() { parent.appendDiagnostic(diagnostic) }
        return claims.sorted { ($0.line ?? 0, $0.name) < ($1.line ?? 0, $1.name) }
    }

    /// The key variable (required, secret), `kid` (empty by default) and, with a thumbprint, `client_certificate`.
    private static func declareAssertionVariables(_ spec: AssertionSpec, in connector: inout ConnectorDefinition) {
        var key = connector.variables[spec.keyVariable] ?? VariableSpec()
        key.required = key.defaultValue == nil
        key.secret = true
        connector.variables[spec.keyVariable] = key
        if connector.variables["kid"] == nil {
            connector.variables["kid"] = VariableSpec(defaultValue: "")
        }
        if spec.usesCertificate {
            var certificate = connector.variables["client_certificate"] ?? VariableSpec()
            certificate.required = certificate.defaultValue == nil
            connector.variables["client_certificate"] = certificate
        }
    }

    /// `{{assertion}}` is the signed JWT, so it needs an `[assertion]` table and may only stand in the body.
    static func assertionPlaceholderProblems(_ connector: ConnectorDefinition, file: String) -> [ConfigDiagnostic] {
        connector.placeholders.filter { $0.name == "assertion" }.compactMap { placeholder in
            let message: String
            if connector.assertion == nil {
                message = "{{assertion}} needs an [assertion] table that describes the JWT to sign"
            } else if !placeholder.key.hasPrefix("body.") {
                message = "{{assertion}} may be used only in [body] (it is signed anew for each request)"
            } else {
                return nil
            }
            return ConfigDiagnostic(file: file, line: connector.line(ofTemplate: placeholder.key), key: placeholder.key, message: message)
        }
    }
}
