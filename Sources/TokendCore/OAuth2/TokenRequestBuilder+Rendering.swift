import Foundation

/// Placeholders rendered into the URL, query, headers and body, each escaped for where it lands.
extension TokenRequestBuilder {
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
        if connector.method == .post, !customNames.contains("content-type") {
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
        switch (connector.method, connector.contentType) {
        case (.get, _): body = []
        case (.post, .form): body = FormURLEncoding.encodedBytes(fields: fields)
        case (.post, .json): body = jsonObject(fields)
        }
        var request = TokenRequest(
            method: connector.method.rawValue,
            url: withQuery(url, definition, text: text),
            headers: headers,
            body: body
        )
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
}
