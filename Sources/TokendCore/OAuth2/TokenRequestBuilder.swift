import Crypto
import Foundation

/// An instance whose secrets have been read: its definition, its variable values and the request they render to.
public struct ResolvedInstance: Sendable, Hashable {
    public var definition: InstanceDefinition
    /// Every variable's value (defaults included), each wrapped so that printing it shows `<redacted>`.
    public var variables: [String: Secret]
    public var request: TokenRequest
    /// SHA-256 (hex) over the request definition, secrets included only as their own hash. A change of
    /// fingerprint invalidates the cached token.
    public var fingerprint: String

    public var name: String { definition.name }

    /// The values of the secret variables, so that messages from outside can be scrubbed of them.
    public var secretValues: [String] {
        definition.secretVariables.compactMap { variables[$0]?.revealed }.filter { !$0.isEmpty }
    }
}

/// Renders an instance's token request (RFC 6749 §4.4) from its definition and variable values.
public enum TokenRequestBuilder {
    /// Builds the request; errors name the instance's file and the key at fault.
    public static func resolve(
        _ definition: InstanceDefinition,
        values: [String: Secret]
    ) -> Result<ResolvedInstance, ConfigDiagnostic> {
        var variables = InstanceDefinition.builtinDefaults.mapValues(Secret.init)
        variables.merge(values) { _, new in new }
        let lookup: (String) -> String? = { variables[$0]?.revealed }
        let redactedLookup: (String) -> String? = { name in
            definition.secretVariables.contains(name) ? "<redacted>" : variables[name]?.revealed
        }
        let url = Template.render(definition.tokenURL, value: lookup)
        let redactedURL = Template.render(definition.tokenURL, value: redactedLookup)
        if let problem = urlProblem(url, allowInsecureHTTP: definition.allowInsecureHTTP) {
            return .failure(
                ConfigDiagnostic(
                    file: definition.file,
                    line: nil,
                    key: "token_url",
                    message: "\(problem) (rendered as \(redactedURL))"
                )
            )
        }

        let clientID = variables["client_id"]?.revealed ?? ""
        let clientSecret = variables["client_secret"]?.revealed ?? ""
        var fields: [(name: String, value: String)] = [("grant_type", variables["grant_type"]?.revealed ?? "")]
        if let scope = variables["scope"]?.revealed, !scope.isEmpty {
            fields.append(("scope", scope))
        }
        var headers: [TokenRequest.Header] = [
            .init("Content-Type", definition.contentType.rawValue),
            .init("Accept", "application/json"),
        ]
        switch definition.clientAuth {
        case .clientSecretPost:
            fields.append(("client_id", clientID))
            fields.append(("client_secret", clientSecret))
        case .clientSecretBasic:
            headers.append(
                .init("Authorization", basicAuthorization(id: clientID, secret: clientSecret, definition.basicEncoding))
            )
        case .none:
            fields.append(("client_id", clientID))
        }
        let body: [UInt8]
        switch definition.contentType {
        case .form:
            body = Array(FormURLEncoding.encode(fields: fields).utf8)
        case .json:
            body = jsonObject(fields)
        }
        let request = TokenRequest(url: url, redactedURL: redactedURL, headers: headers, body: body)
        return .success(
            ResolvedInstance(
                definition: definition,
                variables: variables,
                request: request,
                fingerprint: fingerprint(definition, variables: variables)
            )
        )
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
        let host = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
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

    static func fingerprint(_ definition: InstanceDefinition, variables: [String: Secret]) -> String {
        var canonical = "tokend-fingerprint-v1\n"
        let shape: [String] = [
            definition.tokenURL, definition.clientAuth.rawValue, definition.basicEncoding.rawValue,
            definition.contentType.rawValue, String(definition.allowInsecureHTTP), definition.tokenKey,
            definition.tokenTypeKey, definition.expiresInKey, definition.expiresAtKey ?? "-",
            definition.defaultTTL.map { String($0) } ?? "-",
        ]
        for field in shape { canonical += "\(field.utf8.count):\(field)\n" }
        for name in variables.keys.sorted() {
            guard let value = variables[name]?.revealed else { continue }
            let shown =
                definition.secretVariables.contains(name)
                ? "sha256:" + hex(SHA256.hash(data: Data(value.utf8))) : value
            canonical += "\(name.utf8.count):\(name)=\(shown.utf8.count):\(shown)\n"
        }
        return hex(SHA256.hash(data: Data(canonical.utf8)))
    }

    static func hex(_ digest: SHA256.Digest) -> String {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}
