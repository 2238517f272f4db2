import Foundation

/// What `tokend test NAME` prints: the request as sent with every secret shown as `<secret:NAME>`, the response with
/// the token shown as its fingerprint, and what the parsed token would be served as.
///
/// Pure: the request, the response and `now` are passed in.
public enum TokenTestReport {
    /// The request, as an operator would compare it with the API documentation: method, URL, headers and body.
    ///
    /// `sent` is the request as it goes on the wire (with its signed assertion): whatever in it is not in the
    /// rendering with markers (the assertion, Basic credentials) is shown as a secret, and every secret value is
    /// scrubbed once more from the result.
    public static func request(_ resolved: ResolvedInstance, sent: TokenRequest) -> String {
        let definition = resolved.definition
        let variables = resolved.variables
        let names = definition.secretVariables.sorted()
        // Markers of letters and digits only survive form, path and JSON encoding unchanged.
        func marker(_ index: Int) -> String { "tokendsecretmarker\(index)x" }
        let text: (String) -> String? = { name in
            guard let value = variables[name]?.revealed else { return nil }
            guard let index = names.firstIndex(of: name), !value.isEmpty else { return value }
            return marker(index)
        }
        guard case .success(let shown) = TokenRequestBuilder.render(definition, text: text, checkURL: false) else {
            return "(the request cannot be rendered)"
        }
        var lines = ["\(sent.method) \(shown.url)"]
        for header in shown.headers {
            if header.name == "Authorization", definition.connector.clientAuth == .clientSecretBasic,
                sent.headers.contains(where: { $0.name == "Authorization" && $0.value.hasPrefix("Basic ") })
            {
                lines.append("Authorization: Basic <secret:client_secret> (base64 of client_id:client_secret)")
            } else {
                lines.append("\(header.name): \(header.value)")
            }
        }
        var body = String(decoding: shown.body, as: UTF8.self)
        if sent.assertion != nil {
            let type = ClientAssertion.assertionType
            switch sent.contentType {
            case .form:
                body +=
                    (body.isEmpty ? "" : "&")
                    + "client_assertion_type=\(FormURLEncoding.encode(type))&client_assertion=<secret:client_assertion>"
            case .json:
                body += " (+ \"client_assertion_type\": \"\(type)\", \"client_assertion\": <secret:client_assertion>)"
            }
        }
        if !body.isEmpty || sent.method == "POST" {
            lines.append("")
            lines.append(body)
        }
        var report = lines.joined(separator: "\n")
        for (index, name) in names.enumerated() {
            report = report.replacingOccurrences(of: marker(index), with: "<secret:\(name)>")
        }
        return scrub(report, secrets: sensitive(resolved, sent: sent))
    }

    /// The response: status, headers, body; the token (and any secret a provider echoes) replaced.
    public static func response(
        status: Int,
        headers: [TokenRequest.Header],
        body: [UInt8],
        token: Secret?,
        secrets: [(name: String, value: String)]
    )
        -> String
    {
        var lines = ["HTTP \(status)"]
        for header in headers { lines.append("\(header.name): \(header.value)") }
        lines.append("")
        let limit = 8192
        var text = String(decoding: body.prefix(limit), as: UTF8.self)
        if body.count > limit { text += "… (\(body.count) bytes in all)" }
        lines.append(text)
        var report = lines.joined(separator: "\n")
        if let token, !token.revealed.isEmpty {
            let shown = "<token:\(TokenFingerprint.of(token))>"
            for form in spellings(of: token.revealed) { report = report.replacingOccurrences(of: form, with: shown) }
        }
        return scrub(report, secrets: secrets)
    }

    /// The parsed token and what the daemon would serve: type, scope, expiry and the `[apply]` header and values.
    public static func served(_ token: IssuedToken, application: TokenApplication, now: Date) -> String {
        let fingerprint = "<token:\(TokenFingerprint.of(token.accessToken))>"
        let header = application.headerValue(for: token).replacingOccurrences(of: token.accessToken.revealed, with: fingerprint)
        var lines = [
            "token: \(fingerprint) (\(token.accessToken.revealed.utf8.count) bytes)",
            "token type: \(token.tokenType)",
            "scope: \(token.scope ?? "(none)")",
            "expires: \(RFC3339.format(token.expiresAt)) (in \(Int(token.expiresAt.timeIntervalSince(now))) s)",
            "would serve: \(application.header): \(header)",
        ]
        for (name, value) in application.values.sorted(by: { $0.key < $1.key }) {
            lines.append("exposes: \(name) = \(value)")
        }
        return lines.joined(separator: "\n")
    }

    /// Every secret of the instance and of the request as sent, by name: variable values, the credentials of the
    /// `Authorization` header, the signed client assertion.
    public static func sensitive(_ resolved: ResolvedInstance, sent: TokenRequest) -> [(name: String, value: String)] {
        var found: [(name: String, value: String)] = resolved.definition.secretVariables.sorted().compactMap { name in
            resolved.variable(name).map { (name, $0.revealed) }
        }
        for header in sent.headers where header.name.lowercased() == "authorization" {
            found.append(("authorization", header.value))
            found.append(("authorization", String(header.value.drop { $0 != " " }.dropFirst())))
        }
        if sent.assertion != nil {
            let body = String(decoding: sent.body, as: UTF8.self)
            let fields: [(name: String, value: String)] =
                sent.contentType == .form
                ? FormURLEncoding.decodeFields(body[...])
                : ((JSONValue.parse(sent.body)?.value(at: "client_assertion")?.stringValue).map { [(name: "client_assertion", value: $0)] }
                    ?? [])
            for field in fields where field.name == "client_assertion" { found.append(("client_assertion", field.value)) }
        }
        return found.filter { $0.value.utf8.count >= 4 }
    }

    /// `text` with each secret, in each spelling it may take on the wire, replaced by `<secret:NAME>`.
    static func scrub(_ text: String, secrets: [(name: String, value: String)]) -> String {
        var text = text
        // Longest first, so that a secret that contains another is replaced whole.
        for secret in secrets.sorted(by: { $0.value.count > $1.value.count }) {
            for form in spellings(of: secret.value) { text = text.replacingOccurrences(of: form, with: "<secret:\(secret.name)>") }
        }
        return text
    }

    /// A value as written raw, form-encoded, percent-encoded and JSON-escaped.
    static func spellings(of value: String) -> [String] {
        let json = (try? JSONEncoder().encode(value)).map { String(decoding: $0.dropFirst().dropLast(), as: UTF8.self) } ?? value
        let percent = value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? value
        return Array(Set([value, FormURLEncoding.encode(value), percent, json]).filter { !$0.isEmpty })
            .sorted { $0.count > $1.count }
    }
}
