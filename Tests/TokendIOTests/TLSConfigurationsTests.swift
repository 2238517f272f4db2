import Foundation
import NIOSSL
import Testing
import TokendCore
import TokendTestSupport

@testable import TokendIO

/// TLS material into NIOSSL configurations: TLS 1.2 at least, private CA roots, client certificate and key; bad PEMs
/// are named problems that never echo a key.
@Suite(.timeLimit(.minutes(1))) struct TLSConfigurationsTests {
    @Test func materialBecomesAClientConfigurationWithTLS12AtLeast() throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let material = TLSMaterial(
            caFile: pki.caCertificate,
            trustRootsPEM: try pki.read(pki.caCertificate),
            clientCertificatePEM: try pki.read(pki.clientCertificate),
            clientKeyPEM: Secret(try pki.read(pki.clientKey))
        )
        let configuration = try TLSConfigurations.make(material).get()
        #expect(configuration.minimumTLSVersion == .tlsv12)
        guard case .default? = configuration.trustRoots else {
            Issue.record("the system trust store must stay trusted")
            return
        }
        #expect(configuration.additionalTrustRoots.count == 1)
        #expect(configuration.certificateChain.count == 1)
        #expect(configuration.privateKey != nil)
        #expect(TLSConfigurations.check(TLSMaterial()) == nil)
    }

    @Test func badPEMsAreNamedWithoutEchoingThem() throws {
        let notACertificate = TLSMaterial(caFile: "/etc/tokend/ca.pem", trustRootsPEM: "hello")
        #expect(
            TLSConfigurations.check(notACertificate)
                == TLSProblem(key: "ca_file", message: "/etc/tokend/ca.pem holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        )
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let badKey = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"
        let problem = try #require(
            TLSConfigurations.check(TLSMaterial(clientCertificatePEM: try pki.read(pki.clientCertificate), clientKeyPEM: Secret(badKey)))
        )
        #expect(problem.key == "variables.client_key")
        #expect(!problem.message.contains("c2VjcmV0"))
        #expect(
            TLSConfigurations.check(TLSMaterial(clientCertificatePEM: "nope", clientKeyPEM: Secret(badKey)))?.key
                == "variables.client_certificate"
        )
    }
}
