import NIOSSL
import TokendCore

/// Turns ``TLSMaterial`` into NIOSSL client configurations: TLS 1.2 at least, the system trust store plus `ca_file`,
/// and the client certificate and key for RFC 8705.
///
/// Errors name what is wrong, never the key.
public enum TLSConfigurations {
    /// The configuration for `material`, or the problem with it.
    public static func make(_ material: TLSMaterial) -> Result<TLSConfiguration, TLSProblem> {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let pem = material.trustRootsPEM {
            let file = material.caFile ?? "ca_file"
            guard let roots = try? NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)), !roots.isEmpty else {
                return .failure(TLSProblem(key: "ca_file", message: "\(file) holds no PEM certificate (-----BEGIN CERTIFICATE-----)"))
            }
            configuration.additionalTrustRoots = [.certificates(roots)]
        }
        if let pem = material.clientCertificatePEM {
            guard let chain = try? NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)), !chain.isEmpty else {
                return .failure(
                    TLSProblem(key: "variables.client_certificate", message: "expected a PEM certificate (-----BEGIN CERTIFICATE-----)")
                )
            }
            configuration.certificateChain = chain.map { .certificate($0) }
        }
        if let key = material.clientKeyPEM {
            guard let privateKey = try? NIOSSLPrivateKey(bytes: Array(key.revealed.utf8), format: .pem) else {
                return .failure(TLSProblem(key: "variables.client_key", message: "expected an unencrypted PEM private key"))
            }
            configuration.privateKey = .privateKey(privateKey)
        }
        return .success(configuration)
    }

    /// The check the config loader runs on every instance's TLS material.
    public static let check: ConfigLoader.TLSChecker = { material in
        if case .failure(let problem) = make(material) { return problem }
        return nil
    }
}
