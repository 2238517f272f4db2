import Foundation

/// The assertion an `[assertion]` table describes, rendered for one instance (SPEC §12).
extension TokenRequestBuilder {
    /// Renders the header and claim templates and checks the key and certificate, so that a key of the wrong kind
    /// or a certificate that is not one is a config error naming the instance's variable, not a failing fetch.
    static func configuredAssertion(
        _ definition: InstanceDefinition,
        _ spec: AssertionSpec,
        variables text: (String) -> String?,
        tokenURL: String
    ) -> Result<ClientAssertion?, ConfigDiagnostic> {
        let connector = definition.connector
        func problem(_ variable: String, _ message: String) -> Result<ClientAssertion?, ConfigDiagnostic> {
            .failure(
                ConfigDiagnostic(
                    file: definition.file,
                    line: definition.line(ofVariable: variable),
                    key: "variables.\(variable)",
                    message: message
                )
            )
        }
        let algorithm = spec.algorithm.rawValue
        let written = "[assertion] alg = \"\(algorithm)\" in \(connector.file)\(spec.algorithmLine.map { ":\($0)" } ?? "")"
        let material = text(spec.keyVariable) ?? ""
        if material.isEmpty {
            return problem(spec.keyVariable, "empty; \(written) signs with it")
        }
        if spec.algorithm != .hs256 {
            switch AssertionKey.parse(pem: material) {
            case .success(let key) where !key.signs(spec.algorithm):
                return problem(spec.keyVariable, "\(key.kind) cannot sign \(algorithm) (\(written) needs \(spec.algorithm.keyKind))")
            case .success: break
            case .failure(let error): return problem(spec.keyVariable, "invalid private key: \(error.message)")
            }
        }
        var headerFields: [String: String] = [:]
        if spec.usesCertificate {
            let pem = text("client_certificate") ?? ""
            guard let der = CertificateThumbprint.der(fromPEM: pem) else {
                let asked = spec.x5tS256 ? "x5t_s256" : "x5t"
                return problem(
                    "client_certificate",
                    pem.isEmpty
                        ? "empty; [assertion] \(asked) = true in \(connector.file) puts its thumbprint in the header"
                        : "expected a PEM certificate (-----BEGIN CERTIFICATE-----) for the [assertion] \(asked) header"
                )
            }
            if spec.x5tS256 { headerFields["x5t#S256"] = CertificateThumbprint.sha256(der) }
            if spec.x5t { headerFields["x5t"] = CertificateThumbprint.sha1(der) }
        }
        var claims: [String: ClientAssertion.ClaimValue] = [:]
        for claim in spec.claims {
            // A claim that renders empty (an unset scope, say) is left out, as an empty body field is; its default
            // too, so that `sub = ""` removes `sub`.
            switch claim.value {
            case .text(let template):
                let value = Template.render(template, value: text)
                claims[claim.name] = value.isEmpty ? .absent : .string(value)
            case .texts(let templates):
                let values = templates.map { Template.render($0, value: text) }.filter { !$0.isEmpty }
                claims[claim.name] = values.isEmpty ? .absent : .strings(values)
            case .integer(let number): claims[claim.name] = .integer(number)
            case .boolean(let flag): claims[claim.name] = .boolean(flag)
            }
        }
        let audience = connector.assertionAudience.map { Template.render($0, value: text) }
        let kid = spec.keyID.map { Template.render($0, value: text) } ?? ""
        var assertion = ClientAssertion(
            clientID: text("client_id") ?? "",
            audience: audience ?? String(tokenURL.prefix { $0 != "?" }),
            keyID: kid.isEmpty ? nil : kid,
            keyMaterial: Secret(material),
            algorithm: spec.algorithm,
            lifetime: spec.lifetime
        )
        assertion.claims = claims
        assertion.headerFields = headerFields
        assertion.isClientAuthentication = connector.clientAuth.usesAssertion
        assertion.isConfigured = true
        return .success(assertion)
    }

    /// The fields of a configured assertion that enter the request fingerprint: its definition and key, never a
    /// signature, so that the fingerprint stays the same from one request to the next.
    static func assertionFingerprintFields(_ assertion: ClientAssertion) -> [String] {
        guard assertion.isConfigured else { return [] }
        var fields = ["assertion-spec", String(Int(assertion.lifetime)), assertion.isClientAuthentication ? "client" : "body"]
        for name in assertion.headerFields.keys.sorted() { fields += [name, assertion.headerFields[name] ?? ""] }
        for (name, value) in assertion.claims.sorted(by: { $0.key < $1.key }) {
            fields += [name, sha256Hex(String(describing: value))]
        }
        return fields
    }
}
