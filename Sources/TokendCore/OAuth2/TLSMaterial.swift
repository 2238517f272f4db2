/// What the TLS connection of a token (or discovery) request needs beyond the system's defaults: a private CA
/// (`ca_file`) and, for RFC 8705 `tls_client_auth`, a client certificate and key.
///
/// The IO layer turns it into a TLS configuration (TLS 1.2 minimum). Its description never shows the key.
public struct TLSMaterial: Sendable, Hashable, CustomStringConvertible {
    /// The path of `ca_file`, for messages.
    public var caFile: String?
    /// The PEM text of `ca_file`: trusted in addition to the system trust store.
    public var trustRootsPEM: String?
    /// The client certificate chain (PEM), leaf first.
    public var clientCertificatePEM: String?
    /// The client certificate's private key (PEM).
    public var clientKeyPEM: Secret?

    public init(caFile: String? = nil, trustRootsPEM: String? = nil, clientCertificatePEM: String? = nil, clientKeyPEM: Secret? = nil) {
        self.caFile = caFile
        self.trustRootsPEM = trustRootsPEM
        self.clientCertificatePEM = clientCertificatePEM
        self.clientKeyPEM = clientKeyPEM
    }

    /// Whether the system's defaults do (no private CA, no client certificate).
    public var isDefault: Bool { trustRootsPEM == nil && clientCertificatePEM == nil && clientKeyPEM == nil }

    public var description: String {
        "TLSMaterial(ca_file: \(caFile ?? "-"), client certificate: \(clientCertificatePEM == nil ? "no" : "yes"))"
    }
}

/// A problem found in TLS material while loading (an unreadable or invalid PEM): the key names what to fix.
public struct TLSProblem: Error, Sendable, Hashable {
    /// `ca_file`, `variables.client_certificate` or `variables.client_key`.
    public var key: String
    public var message: String

    public init(key: String, message: String) {
        self.key = key
        self.message = message
    }
}
