import Foundation

/// Renders an instance's token request from its connector and variable values: `{{name}}` placeholders in the URL,
/// `[query]`, `[headers]` and `[body]`, each escaped for where it goes, and the client authentication
/// (RFC 6749 §2.3, §4.4).
public enum TokenRequestBuilder {
    /// Builds the request; errors name the file and the key at fault.
    public static func resolve(
        _ definition: InstanceDefinition,
        values: VariableMap<Secret>,
        tls: TLSMaterial = TLSMaterial()
    ) -> Result<ResolvedInstance, ConfigDiagnostic> {
        let variables = Self.variables(definition, values: values)
        let request: TokenRequest
        switch self.request(definition, variables: variables, tls: tls) {
        case .success(let rendered): request = rendered
        case .failure(let diagnostic): return .failure(diagnostic)
        }
        // The URL was checked above; the hashed rendering differs only in secret values. Another instance's token
        // stands as that instance's name: it changes with every refresh of the input, which is a reason to refetch
        // (SPEC §11), not a different request. A file's contents count as they were read at load: hosts of a fleet
        // share a token only when they would send the same request, and a file rotated while tokend runs is
        // refetched without waiting for a reload.
        let hashedSecret = redactedText(definition, variables) { "sha256-" + sha256Hex($0) }
        let hashText: (String) -> String? = { name in
            if case .instance(let input)? = definition.variables[name] { return VariableSource.instance(name: input).fingerprintMarker }
            return hashedSecret(name)
        }
        var hashed = (try? render(definition, text: hashText, checkURL: false).get()) ?? request
        hashed.tls = tls
        hashed.assertion = request.assertion
        return .success(
            ResolvedInstance(
                definition: definition,
                values: values,
                tls: tls,
                endpointHost: request.endpointHost,
                fingerprint: fingerprintDigest(of: hashed, definition.connector)
            )
        )
    }

    /// The request an instance's definition and values render to: URL (checked), query, headers, body, client
    /// authentication, the URL with secrets redacted for messages, and the TLS material.
    public static func request(
        _ definition: InstanceDefinition,
        values: VariableMap<Secret>,
        tls: TLSMaterial,
        checkURL: Bool = true
    ) -> Result<TokenRequest, ConfigDiagnostic> {
        request(definition, variables: variables(definition, values: values), tls: tls, checkURL: checkURL)
    }

    static func request(
        _ definition: InstanceDefinition,
        variables: [String: Secret],
        tls: TLSMaterial,
        checkURL: Bool = true
    ) -> Result<TokenRequest, ConfigDiagnostic> {
        var request: TokenRequest
        switch render(definition, text: { variables[$0]?.revealed }, checkURL: checkURL) {
        case .success(let rendered): request = rendered
        case .failure(var diagnostic):
            if diagnostic.key == "token_url" {
                let shown = renderURL(definition.connector.tokenURL, text: redactedText(definition, variables) { _ in "<redacted>" })
                diagnostic.message += " (rendered as \(shown))"
            }
            return .failure(diagnostic)
        }
        request.redactedURL = fullURL(definition, text: redactedText(definition, variables, marker: { _ in "<redacted>" }))
        request.tls = tls
        switch assertion(definition, variables: { variables[$0]?.revealed }, tokenURL: request.url) {
        case .success(let built): request.assertion = built
        case .failure(let diagnostic): return .failure(diagnostic)
        }
        return .success(request)
    }

    /// The connector's defaults with the instance's values over them.
    static func variables(_ definition: InstanceDefinition, values: VariableMap<Secret>) -> [String: Secret] {
        var variables: [String: Secret] = [:]
        for (name, spec) in definition.connector.variables {
            if let value = spec.defaultValue { variables[name] = Secret(value) }
        }
        for (name, value) in values { variables[name] = value }
        if definition.connector.assertion != nil {
            variables["assertion"] = Secret(ClientAssertion.bodyMarker)
        }
        return variables
    }

    /// The client assertion of a `private_key_jwt` or `client_secret_jwt` instance (nil for other styles); the key
    /// is parsed here so that a bad one is a config error, not a failing fetch.
    static func assertion(
        _ definition: InstanceDefinition,
        variables text: (String) -> String?,
        tokenURL: String
    ) -> Result<ClientAssertion?, ConfigDiagnostic> {
        let connector = definition.connector
        if let spec = connector.assertion {
            return configuredAssertion(definition, spec, variables: text, tokenURL: tokenURL)
        }
        guard connector.clientAuth.usesAssertion else { return .success(nil) }
        let keyVariable = connector.clientAuth == .privateKeyJWT ? "private_key" : "client_secret"
        let material = text(keyVariable) ?? ""
        func problem(_ message: String) -> Result<ClientAssertion?, ConfigDiagnostic> {
            .failure(
                ConfigDiagnostic(
                    file: definition.file,
                    line: definition.line(ofVariable: keyVariable),
                    key: "variables.\(keyVariable)",
                    message: message
                )
            )
        }
        let algorithm: AssertionAlgorithm
        if connector.clientAuth == .clientSecretJWT {
            algorithm = .hs256
        } else {
            switch AssertionKey.parse(pem: material) {
            case .success(let key): algorithm = key.algorithm
            case .failure(let error): return problem("invalid private key: \(error.message)")
            }
        }
        if material.isEmpty {
            return problem("empty; \(connector.clientAuth.rawValue) signs the client assertion with it")
        }
        let audience = connector.assertionAudience.map { Template.render($0, value: text) }
        let kid = text("kid") ?? ""
        return .success(
            ClientAssertion(
                clientID: text("client_id") ?? "",
                audience: audience ?? String(tokenURL.prefix { $0 != "?" }),
                keyID: kid.isEmpty ? nil : kid,
                keyMaterial: Secret(material),
                algorithm: algorithm
            )
        )
    }

    /// The request as an operator would compare it with the API documentation: method, URL, headers and body, with
    /// every secret shown as `<redacted>` (`tokend check --show`).
    public static func describe(_ resolved: ResolvedInstance) -> String {
        let marker = "tokendREDACTEDsecret"
        let shown = redactedText(resolved.definition, resolved.variables) { _ in marker }
        guard case .success(let request) = render(resolved.definition, text: shown) else {
            return "(cannot render)"
        }
        var lines = ["\(request.method) \(request.url)"]
        for header in request.headers {
            if header.name == "Authorization", resolved.definition.connector.clientAuth == .clientSecretBasic {
                lines.append("Authorization: Basic <redacted> (client_id and client_secret, base64)")
            } else {
                lines.append("\(header.name): \(header.value)")
            }
        }
        lines.append("")
        let signedEachTime = resolved.request.assertion.map { "\($0.algorithm.rawValue) JWT signed for each request" } ?? ""
        lines.append(
            String(decoding: request.body, as: UTF8.self).replacingOccurrences(of: ClientAssertion.bodyMarker, with: "<\(signedEachTime)>")
        )
        if let assertion = resolved.request.assertion, assertion.isClientAuthentication {
            lines.append(
                "(+ client_assertion_type=\(ClientAssertion.assertionType), client_assertion=<\(assertion.algorithm.rawValue) JWT "
                    + "signed for each request: iss=sub=\(assertion.clientID), aud=\(assertion.audience)"
                    + (assertion.isConfigured ? " unless [assertion.claims] says otherwise" : "")
                    + (assertion.keyID.map { ", kid=\($0)" } ?? "") + ">)"
            )
        }
        let tls = resolved.tls
        if !tls.isDefault {
            lines.append(
                "(TLS: ca_file \(tls.caFile ?? "-"), client certificate \(tls.clientCertificatePEM == nil ? "no" : "yes"), TLS 1.2 at least)"
            )
        }
        return lines.joined(separator: "\n").replacingOccurrences(of: marker, with: "<redacted>")
    }

    /// `Basic base64(id:secret)`, with RFC 6749 §2.3.1 form-url-encoding of both parts unless `raw`.
    public static func basicAuthorization(id: String, secret: String, _ encoding: BasicEncoding) -> String {
        let pair: String
        switch encoding {
        case .formURLEncoded: pair = "\(FormURLEncoding.encode(id)):\(FormURLEncoding.encode(secret))"
        case .raw: pair = "\(id):\(secret)"
        }
        return "Basic " + Data(pair.utf8).base64EncodedString()
    }
}
