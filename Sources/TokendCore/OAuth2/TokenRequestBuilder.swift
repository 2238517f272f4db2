import Crypto
import Foundation

/// An instance whose secrets have been read: its definition, its variable values and what they render to.
///
/// Like ``InstanceDefinition`` the fields live in one shared copy-on-write box: a resolved instance is kept by the
/// render memo, the loaded config and the daemon's running state, and each copy costs a pointer. The rendered request
/// itself is not kept: it is rendered again for each fetch (``renderRequest()``), since a kept one (its URLs, headers
/// and body) cost about 500 bytes per instance, 5 MB at 10,000, to save a render every few minutes.
@dynamicMemberLookup
public struct ResolvedInstance: Sendable, Hashable {
    public struct Fields: Sendable, Hashable {
        public var definition: InstanceDefinition
        /// The values the instance sets (secrets read), without the connector's defaults (``variables`` adds them):
        /// the same dictionary the render memo keys on, so keeping it costs nothing.
        public var values: VariableMap<Secret>
        /// The TLS material the request is sent with.
        public var tls: TLSMaterial
        /// The token endpoint's host (and port), for per-endpoint limits and messages.
        public var endpointHost: String
        /// SHA-256 over the rendered request and response shape, with every secret replaced by its own SHA-256.
        ///
        /// A change of fingerprint invalidates the cached token. Kept as the digest (32 bytes inline); its hex,
        /// ``ResolvedInstance/fingerprint``, is made when asked for (a kept hex string cost 1.1 MB at 10,000).
        public var fingerprintDigest: SHA256.Digest
        /// Who may read the token; nil when the socket's permissions decide.
        public var access: AccessPolicy?
        /// Where the raw token is also written, if anywhere.
        public var sink: SinkTarget?
    }

    @usableFromInline var storage: SharedBox<Fields>

    public init(
        definition: InstanceDefinition,
        values: VariableMap<Secret>,
        tls: TLSMaterial,
        endpointHost: String,
        fingerprint: SHA256.Digest,
        access: AccessPolicy? = nil,
        sink: SinkTarget? = nil
    ) {
        storage = SharedBox(
            Fields(
                definition: definition,
                values: values,
                tls: tls,
                endpointHost: endpointHost,
                fingerprintDigest: fingerprint,
                access: access,
                sink: sink
            )
        )
    }

    /// The fingerprint's hex, as cache records carry it.
    public var fingerprint: String { TokenRequestBuilder.hex(self.fingerprintDigest) }

    /// The token request, rendered now from the definition and values (it rendered when the instance was resolved,
    /// and rendering is pure, so it renders the same again).
    public func renderRequest() -> Result<TokenRequest, ConfigDiagnostic> {
        // The URL was checked when the instance was resolved; parsing it again was most of a render's time.
        TokenRequestBuilder.request(self.definition, values: self.values, tls: self.tls, checkURL: false)
    }

    /// ``renderRequest()`` for callers that hold a resolved instance, which always renders.
    public var request: TokenRequest {
        switch renderRequest() {
        case .success(let request): return request
        case .failure(let diagnostic): preconditionFailure("a resolved instance no longer renders: \(diagnostic)")
        }
    }

    @inlinable
    public subscript<Value>(dynamicMember field: WritableKeyPath<Fields, Value>) -> Value {
        get { storage.value[keyPath: field] }
        set { storage.value[keyPath: field] = newValue }
    }

    public var name: String { self.definition.name }

    /// Every variable's value, the connector's defaults included, each wrapped so that printing it shows `<redacted>`.
    ///
    /// Built when asked for (`tokend check --show`); a dictionary per instance kept for it cost 4 MB at 10,000
    /// instances.
    public var variables: [String: Secret] {
        TokenRequestBuilder.variables(self.definition, values: self.values)
    }

    /// One variable's value, the connector's default if the instance sets none.
    public func variable(_ name: String) -> Secret? {
        self.values[name] ?? self.definition.connector.variables[name]?.defaultValue.map(Secret.init)
    }

    /// The values of the secret variables, so that messages from outside can be scrubbed of them.
    public var secretValues: [String] {
        self.definition.secretVariables.compactMap { variable($0)?.revealed }.filter { !$0.isEmpty }
    }

    /// The secret values and the credentials of the request's `Authorization` header (a Basic header carries the
    /// secret base64-encoded): everything a provider's echo of the request must be scrubbed of.
    public var sensitiveValues: [String] {
        let request = (try? renderRequest().get())
        let credentials = (request?.headers ?? []).filter { $0.name.lowercased() == "authorization" }.flatMap { header in
            [header.value, String(header.value.drop { $0 != " " }.dropFirst())]
        }
        return secretValues + credentials.filter { $0.utf8.count >= 8 }
    }
}

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
        // The URL was checked above; the hashed rendering differs only in secret values.
        let hashText = redactedText(definition, variables) { "sha256-" + sha256Hex($0) }
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
        lines.append(String(decoding: request.body, as: UTF8.self))
        if let assertion = resolved.request.assertion {
            lines.append(
                "(+ client_assertion_type=\(ClientAssertion.assertionType), client_assertion=<\(assertion.algorithm.rawValue) JWT "
                    + "signed for each request: iss=sub=\(assertion.clientID), aud=\(assertion.audience)"
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

    // MARK: - Rendering

    static func render(
        _ definition: InstanceDefinition,
        text: (String) -> String?,
        checkURL: Bool = true
    ) -> Result<TokenRequest, ConfigDiagnostic> {
        let connector = definition.connector
        // Values come from the instance, so its file is where the fix goes: the line of the template for the
        // inline form, else the line of the first variable the instance gives to that template.
        let file = definition.file
        let inline = connector.isInline
        func line(of template: String, written: Int?) -> Int? {
            if inline { return written }
            return Template.placeholders(in: template).lazy.compactMap { definition.line(ofVariable: $0) }.first
        }
        let url = renderURL(connector.tokenURL, text: text)
        if checkURL, let problem = urlProblem(url, allowInsecureHTTP: connector.allowInsecureHTTP) {
            return .failure(
                ConfigDiagnostic(
                    file: file,
                    line: line(of: connector.tokenURL, written: connector.tokenURLLine),
                    key: "token_url",
                    message: problem
                )
            )
        }

        var headers: [TokenRequest.Header] = []
        let custom = connector.headers.map { ($0, Template.render($0.template, value: text)) }
        for (field, value) in custom where value.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) {
            return .failure(
                ConfigDiagnostic(
                    file: file,
                    line: line(of: field.template, written: field.line),
                    key: "headers.\(field.name)",
                    message: "the rendered value contains a line break (header injection refused)"
                )
            )
        }
        let customNames = Set(custom.map { $0.0.name.lowercased() })
        if !customNames.contains("content-type") {
            headers.append(.init("Content-Type", connector.contentType.rawValue))
        }
        if !customNames.contains("accept") {
            headers.append(.init("Accept", "application/json"))
        }
        let clientID = text("client_id") ?? ""
        let clientSecret = text("client_secret") ?? ""
        if connector.clientAuth == .clientSecretBasic, !customNames.contains("authorization") {
            headers.append(.init("Authorization", basicAuthorization(id: clientID, secret: clientSecret, connector.basicEncoding)))
        }
        headers += custom.map { TokenRequest.Header($0.0.name, $0.1) }

        var fields: [(name: String, value: String)]
        if let body = connector.body {
            fields = body.map { ($0.name, Template.render($0.template, value: text)) }
        } else {
            fields = [
                ("grant_type", text("grant_type") ?? ""), ("scope", text("scope") ?? ""),
                ("resource", text("resource") ?? ""), ("audience", text("audience") ?? ""),
            ]
            switch connector.clientAuth {
            case .clientSecretPost:
                fields += [("client_id", clientID), ("client_secret", clientSecret)]
            case .clientSecretBasic:
                break
            case .clientSecretJWT, .privateKeyJWT, .tlsClientAuth:
                // The assertion (added when sent) or the certificate authenticates; client_id names the client
                // (RFC 7521 §4.2, RFC 8705 §2).
                fields.append(("client_id", clientID))
            case .none:
                if !clientID.isEmpty { fields.append(("client_id", clientID)) }
            }
        }
        // An empty value (an unset scope, say) is left out rather than sent empty.
        fields.removeAll { $0.value.isEmpty }
        let body: [UInt8]
        switch connector.contentType {
        case .form: body = FormURLEncoding.encodedBytes(fields: fields)
        case .json: body = jsonObject(fields)
        }
        var request = TokenRequest(url: withQuery(url, definition, text: text), headers: headers, body: body)
        request.contentType = connector.contentType
        return .success(request)
    }

    /// The token URL with its `[query]`, rendered.
    static func fullURL(_ definition: InstanceDefinition, text: (String) -> String?) -> String {
        withQuery(renderURL(definition.connector.tokenURL, text: text), definition, text: text)
    }

    private static func withQuery(_ url: String, _ definition: InstanceDefinition, text: (String) -> String?) -> String {
        let query = definition.connector.query.compactMap { field -> (name: String, value: String)? in
            let value = Template.render(field.template, value: text)
            return value.isEmpty ? nil : (field.name, value)
        }
        guard !query.isEmpty else { return url }
        return url + (url.contains("?") ? "&" : "?") + FormURLEncoding.encode(fields: query)
    }

    /// Renders a URL template, escaping each value for where it lands: raw in the scheme and authority (a base
    /// URL variable such as `{{url}}/oauth/token`), as a path segment in the path, as a query component after `?`.
    static func renderURL(_ template: String, text: (String) -> String?) -> String {
        var output = ""
        Template.walk(template) { piece in
            switch piece {
            case .literal(let literal):
                output += literal
            case .placeholder(let name, let original):
                guard let value = text(name) else {
                    output += original
                    return
                }
                if let schemeEnd = output.range(of: "://") {
                    let afterAuthority = output[schemeEnd.upperBound...]
                    if output.contains("?") {
                        output += FormURLEncoding.encode(value)
                    } else if afterAuthority.contains("/") {
                        output += percentEncodePathSegment(value)
                    } else {
                        output += value
                    }
                } else {
                    output += value
                }
            }
        }
        return output
    }

    static func percentEncodePathSegment(_ value: String) -> String {
        // RFC 3986 pchar without "/": unreserved, sub-delims, ":" and "@".
        var allowed = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        allowed.insert(charactersIn: "!$&'()*+,;=:@")
        return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
    }

    /// Variable text with secret values replaced by `marker(secret)`.
    static func redactedText(
        _ definition: InstanceDefinition,
        _ variables: [String: Secret],
        marker: @escaping (String) -> String
    ) -> (String) -> String? {
        { name in
            guard let value = variables[name]?.revealed else { return nil }
            return definition.secretVariables.contains(name) && !value.isEmpty ? marker(value) : value
        }
    }

    /// Why `url` cannot be a token URL, or nil when it can.
    static func urlProblem(_ url: String, allowInsecureHTTP: Bool) -> String? {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
            let host = components.host, !host.isEmpty
        else {
            return "expected an absolute http(s) URL"
        }
        switch scheme {
        case "https":
            return nil
        case "http":
            if allowInsecureHTTP || isLoopback(host) { return nil }
            return "http:// is allowed only to a loopback host; use https or set allow_insecure_http = true"
        default:
            return "expected an https:// URL, found scheme '\(scheme)'"
        }
    }

    static func isLoopback(_ host: String) -> Bool {
        var host = Substring(host.lowercased())
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        if host == "localhost" || host == "::1" { return true }
        let octets = host.split(separator: ".")
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    static func jsonObject(_ fields: [(name: String, value: String)]) -> [UInt8] {
        var object: [String: String] = [:]
        for field in fields { object[field.name] = field.value }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Array(data)
    }

    static func fingerprint(of request: TokenRequest, _ connector: ConnectorDefinition) -> String {
        hex(fingerprintDigest(of: request, connector))
    }

    static func fingerprintDigest(of request: TokenRequest, _ connector: ConnectorDefinition) -> SHA256.Digest {
        // "tokend-fingerprint-v2\n", then "<byte count>:<field>\n" for each field, built in one buffer.
        var canonical: [UInt8] = Array("tokend-fingerprint-v2\n".utf8)
        canonical.reserveCapacity(request.url.utf8.count + request.body.count + 512)
        func add(_ field: String) {
            canonical.append(contentsOf: String(field.utf8.count).utf8)
            canonical.append(UInt8(ascii: ":"))
            canonical.append(contentsOf: field.utf8)
            canonical.append(UInt8(ascii: "\n"))
        }
        add(request.method)
        add(request.url)
        for header in request.headers {
            add(header.name)
            add(header.value)
        }
        add(String(decoding: request.body, as: UTF8.self))
        add(connector.tokenKey)
        add(connector.tokenTypeKey)
        add(connector.expiresInKey)
        add(connector.expiresAtKey ?? "-")
        add(connector.defaultTTL.map { String($0) } ?? "-")
        // Added only when present, so that the fingerprints of instances without them stay as they were.
        if let assertion = request.assertion {
            for field in [
                "assertion", assertion.algorithm.rawValue, assertion.clientID, assertion.audience, assertion.keyID ?? "-",
                sha256Hex(assertion.keyMaterial.revealed),
            ] { add(field) }
        }
        if !request.tls.isDefault {
            for field in [
                "tls", sha256Hex(request.tls.trustRootsPEM ?? "-"), sha256Hex(request.tls.clientCertificatePEM ?? "-"),
                sha256Hex(request.tls.clientKeyPEM?.revealed ?? "-"),
            ] { add(field) }
        }
        return SHA256.hash(data: canonical)
    }

    static func sha256Hex(_ text: String) -> String {
        hex(SHA256.hash(data: Array(text.utf8)))
    }

    static func hex(_ digest: SHA256.Digest) -> String {
        // String(format:) here was a third of the time to load 1,000 instances.
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(SHA256.Digest.byteCount * 2)
        for byte in digest {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
