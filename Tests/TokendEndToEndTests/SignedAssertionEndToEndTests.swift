import Foundation
import Testing
import TokendTestSupport

/// `[assertion]` with the real binary (SPEC §12): an Entra-ID-shaped certificate credential (PS256 + `x5t#S256`)
/// and a Google-service-account-shaped JWT-bearer grant (RS256, `{{assertion}}` in the body), each verified by the
/// endpoint with the public key; a refresh signs a new assertion.
@Suite(.serialized, .timeLimit(.minutes(2))) struct SignedAssertionEndToEndTests {
    /// The endpoint's record of what it accepted: the assertions, decoded by the test's own decoder.
    final class Accepted: @unchecked Sendable {
        private let lock = NSLock()
        private var jwts: [String] = []

        func add(_ jwt: String) { lock.withLock { jwts.append(jwt) } }
        var all: [String] { lock.withLock { jwts } }
    }

    /// The RFC 7523 §2.1 grant as a connector's `[body]`: the signed assertion is the grant.
    static let jwtBearerBody = """
        [body]
        grant_type = "urn:ietf:params:oauth:grant-type:jwt-bearer"
        assertion  = "{{assertion}}"
        """

    /// Runs `body` with a harness whose endpoint issues 3-second tokens (refreshed about 2 s after each fetch).
    func withShortTokens(_ body: (DaemonHarness, TestPKI) async throws -> Void) async throws {
        try await DaemonHarness.with(lifetime: 3) { harness in
            let pki = try TestPKI.make()
            harness.onTearDown { pki.remove() }
            try await body(harness, pki)
        }
    }

    @Test func entraCertificateCredentialIsPS256WithTheCertificateThumbprint() async throws {
        try await withShortTokens { harness, pki in
            let tokenURL = harness.endpoint.baseURL + "/tenant-1/oauth2/v2.0/token"
            let publicKey = try pki.read(pki.rsaPublicKey)
            // The thumbprint the endpoint knows the key by, from openssl's DER of the certificate.
            let der = try Data(contentsOf: URL(fileURLWithPath: pki.clientCertificateDER))
            let registered = DecodedAssertion.thumbprintSHA256(der: der)
            let accepted = Accepted()
            harness.endpoint.requireClientAssertion { jwt in
                guard let decoded = try? DecodedAssertion(jwt) else { return "not a JWT" }
                if decoded.algorithm != "PS256" { return "expected PS256" }
                if decoded.headerString("x5t#S256") != registered { return "unknown certificate thumbprint" }
                if let problem = decoded.problem(publicKeyPEM: publicKey, clientID: "app-1234", audience: tokenURL) { return problem }
                guard let iat = decoded.number("iat"), decoded.number("nbf") == iat, decoded.number("exp") == iat + 300 else {
                    return "iat/nbf/exp do not follow lifetime = 5m"
                }
                accepted.add(jwt)
                return nil
            }
            try harness.writeConnector(
                "entra",
                """
                token_url   = "\(harness.endpoint.baseURL)/{{tenant}}/oauth2/v2.0/token"
                client_auth = "private_key_jwt"

                [variables.tenant]
                required = true

                [assertion]
                alg      = "PS256"
                lifetime = "5m"
                x5t_s256 = true
                """
            )
            let key = try harness.writeSecret("entra.key", try pki.read(pki.rsaKey))
            try harness.writeRaw(
                "graph",
                """
                connector = "entra"

                [variables]
                tenant             = "tenant-1"
                client_id          = "app-1234"
                scope              = "https://graph.example.com/.default"
                private_key        = { file = "\(key)" }
                client_certificate = { file = "\(pki.clientCertificate)" }
                """
            )
            try harness.start()
            try await harness.waitUntilReady()
            #expect(try await harness.token("graph") != nil, "\(harness.log)")
            try await eventually("a refresh with a second assertion", timeout: 15) { accepted.all.count >= 2 }
            try await distinctAndNeverInTheLog(accepted.all, harness, key: try pki.read(pki.rsaKey))
            let request = try #require(harness.endpoint.requests.first)
            #expect(request.formFields["client_id"] == "app-1234")
            #expect(request.formFields["scope"] == "https://graph.example.com/.default")
        }
    }

    @Test func googleServiceAccountIsTheJWTBearerGrantWithTheAssertionInTheBody() async throws {
        try await withShortTokens { harness, pki in
            let tokenURL = harness.endpoint.tokenURL
            let publicKey = try pki.read(pki.rsaPublicKey)
            let accepted = Accepted()
            harness.endpoint.requireJWTBearerGrant { jwt in
                guard let decoded = try? DecodedAssertion(jwt) else { return "not a JWT" }
                if decoded.algorithm != "RS256" { return "expected RS256" }
                if decoded.headerString("kid") != "0123abcd" { return "kid is not the key id" }
                if !decoded.verifies(publicKeyPEM: publicKey) { return "signature does not verify" }
                if decoded.string("iss") != "robot@project.iam.example.com" { return "iss is not the client email" }
                if decoded.claims["sub"] != nil { return "no sub without domain-wide delegation" }
                if decoded.string("aud") != tokenURL { return "aud is not the token URL" }
                if decoded.string("scope") != "https://www.example.com/auth/cloud-platform" { return "scope claim missing" }
                guard let iat = decoded.number("iat"), decoded.number("exp") == iat + 3600 else { return "exp is not iat + 1h" }
                accepted.add(jwt)
                return nil
            }
            try harness.writeConnector(
                "google-sa",
                """
                token_url   = "\(tokenURL)"
                client_auth = "none"

                [variables.private_key_id]
                required = true
                [variables.subject]
                default = ""

                [assertion]
                alg      = "RS256"
                lifetime = "1h"
                kid      = "{{private_key_id}}"
                [assertion.claims]
                scope = "{{scope}}"
                sub   = "{{subject}}"

                \(SignedAssertionEndToEndTests.jwtBearerBody)
                """
            )
            let key = try harness.writeSecret("sa.key", try pki.read(pki.rsaKey))
            try harness.writeRaw(
                "gcp",
                """
                connector = "google-sa"

                [variables]
                client_id      = "robot@project.iam.example.com"
                private_key_id = "0123abcd"
                private_key    = { file = "\(key)" }
                scope          = "https://www.example.com/auth/cloud-platform"
                """
            )
            try harness.start()
            try await harness.waitUntilReady()
            #expect(try await harness.token("gcp") != nil, "\(harness.log)")
            try await eventually("a refresh with a second assertion", timeout: 15) { accepted.all.count >= 2 }
            try await distinctAndNeverInTheLog(accepted.all, harness, key: try pki.read(pki.rsaKey))
            let fields = try #require(harness.endpoint.requests.first).formFields
            #expect(Set(fields.keys) == ["grant_type", "assertion"], "the body is the [body] table, nothing else")
            let (status, stdout, _) = try harness.runCLI(["check", "--config-dir", harness.configDir, "--show", "gcp"])
            #expect(status == 0)
            #expect(stdout.contains("assertion=<RS256 JWT signed for each request>"), "\(stdout)")
        }
    }

    @Test(arguments: ["google-service-account", "entra-certificate"])
    func theExamplesPassCheck(_ example: String) throws {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        let directory = root.appendingPathComponent("examples/recipes/\(example)").path
        let result = try runCommand([
            "/usr/bin/env", "CREDENTIALS_DIRECTORY=\(directory)/credentials", try DaemonHarness.binaryPath(), "check", "--config-dir",
            directory,
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("1 instance(s) valid, 0 error(s)"), "\(result.stdout)")
    }

    /// Every accepted assertion has its own jti and signature, and none of them or the key reached the log.
    func distinctAndNeverInTheLog(_ jwts: [String], _ harness: DaemonHarness, key: String) async throws {
        let decoded = try jwts.map { try DecodedAssertion($0) }
        #expect(Set(jwts).count == jwts.count, "an assertion was sent twice")
        #expect(Set(decoded.compactMap { $0.string("jti") }).count == jwts.count, "a jti was used twice")
        let log = harness.log
        #expect(jwts.allSatisfy { !log.contains($0) && !log.contains(String($0.split(separator: ".")[2])) })
        #expect(!log.contains(String(key.split(separator: "\n")[1])))
    }
}
