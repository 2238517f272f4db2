import Foundation

/// Why discovery failed; the message names the URL or the field at fault.
public struct DiscoveryError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// The parts of an authorization server's metadata that tokend uses (OpenID Connect Discovery 1.0 §3,
/// RFC 8414 §2, RFC 8705 §5).
public struct DiscoveryDocument: Sendable, Hashable {
    public var issuer: String?
    public var tokenEndpoint: String?
    /// `mtls_endpoint_aliases.token_endpoint` (RFC 8705 §5).
    public var mtlsTokenEndpoint: String?
    /// `token_endpoint_auth_methods_supported`, when the server lists them.
    public var authMethods: [String]?

    public init(issuer: String? = nil, tokenEndpoint: String? = nil, mtlsTokenEndpoint: String? = nil, authMethods: [String]? = nil) {
        self.issuer = issuer
        self.tokenEndpoint = tokenEndpoint
        self.mtlsTokenEndpoint = mtlsTokenEndpoint
        self.authMethods = authMethods
    }

    /// The two well-known URLs for an issuer, in the order tried: OpenID Connect's
    /// `<issuer>/.well-known/openid-configuration`, then RFC 8414's
    /// `<scheme>://<host>/.well-known/oauth-authorization-server<path>`.
    public static func wellKnownURLs(issuer: String) -> [String] {
        let trimmed = issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer
        var urls = [trimmed + "/.well-known/openid-configuration"]
        if let schemeEnd = trimmed.range(of: "://") {
            let afterScheme = trimmed[schemeEnd.upperBound...]
            let authorityEnd = afterScheme.firstIndex(of: "/") ?? afterScheme.endIndex
            let origin = trimmed[..<authorityEnd]
            let path = afterScheme[authorityEnd...]
            urls.append(origin + "/.well-known/oauth-authorization-server" + path)
        }
        return urls
    }

    /// Reads a metadata document; the message says what is wrong with it.
    public static func parse(_ body: [UInt8]) -> Result<DiscoveryDocument, DiscoveryError> {
        guard let json = JSONValue.parse(body), case .object = json else {
            return .failure(DiscoveryError("the metadata document is not a JSON object"))
        }
        func string(_ path: String) -> String? {
            if case .string(let text)? = json.value(at: path), !text.isEmpty { return text }
            return nil
        }
        var document = DiscoveryDocument()
        document.issuer = string("issuer")
        document.tokenEndpoint = string("token_endpoint")
        document.mtlsTokenEndpoint = string("mtls_endpoint_aliases.token_endpoint")
        if case .array(let items)? = json.value(at: "token_endpoint_auth_methods_supported") {
            document.authMethods = items.compactMap { item in
                if case .string(let text) = item { return text }
                return nil
            }
        }
        return .success(document)
    }

    /// The token endpoint to use with `auth`: the mTLS alias for `tls_client_auth` when there is one.
    ///
    /// Fails when the document belongs to another issuer, has no token endpoint, or does not offer the configured
    /// method.
    public func tokenEndpoint(issuer expected: String, auth: ClientAuthentication) -> Result<String, DiscoveryError> {
        if let issuer, Self.normalized(issuer) != Self.normalized(expected) {
            return .failure(DiscoveryError("the metadata names issuer \(issuer), not \(expected)"))
        }
        if let methods = authMethods, !methods.contains(auth.rawValue) {
            let offered = methods.isEmpty ? "none" : methods.joined(separator: ", ")
            return .failure(DiscoveryError("issuer \(expected) does not offer client_auth \"\(auth.rawValue)\" (it offers: \(offered))"))
        }
        if auth == .tlsClientAuth, let alias = mtlsTokenEndpoint { return .success(alias) }
        guard let tokenEndpoint else { return .failure(DiscoveryError("the metadata of \(expected) has no token_endpoint")) }
        return .success(tokenEndpoint)
    }

    static func normalized(_ issuer: String) -> String {
        issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer
    }
}
