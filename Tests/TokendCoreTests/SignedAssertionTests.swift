import Crypto
import Foundation
import Testing
import TokendTestSupport
import _CryptoExtras

@testable import TokendCore

/// `[assertion]` (SPEC §12): each algorithm verified with the public key by the test's own decoder, claims defaults
/// and overrides, header `kid`, `x5t#S256` and `x5t` against thumbprints openssl's DER gives, lifetime, a fresh jti,
/// the `{{assertion}}` body, and the config errors.
@Suite(.timeLimit(.minutes(1))) struct SignedAssertionTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_123.75)
    static let rsa = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
    static let ec = P256.Signing.PrivateKey()
    static let ed = Curve25519.Signing.PrivateKey()
    /// openssl makes the certificate and its DER; the thumbprints below are computed from that DER by the test.
    static let pki = try! TestPKI.make()

    static let tokenURL = "https://login.example.com/tenant-1/oauth2/v2.0/token"

    /// An inline instance with `[assertion]`; the key, secret and certificate files are served by ``load(_:files:)``.
    func instance(
        clientAuth: String = "private_key_jwt",
        assertion: String,
        variables: String = "private_key = { file = \"/s/key.pem\" }",
        body: String = ""
    ) -> String {
        """
        token_url   = "\(Self.tokenURL)?api-version=2"
        client_auth = "\(clientAuth)"

        [variables]
        client_id   = "client-42"
        scope       = "api://resource/.default"
        \(variables)

        [assertion]
        \(assertion)
        \(body)
        """
    }

    func load(_ text: String, files: [String: String]) -> ConfigLoader.Loaded {
        let input = ConfigLoader.Input(settings: nil, instances: [("alpha", .success(.init(path: "/c/instances/alpha.toml", text: text)))])
        return ConfigLoader.load(input) { source in
            guard case .file(let path) = source, let text = files[path] else { return .failure(.init("no such file")) }
            return .success(.init(text))
        }
    }

    func resolve(_ text: String, key: String) throws -> ResolvedInstance {
        let loaded = load(text, files: ["/s/key.pem": key, "/s/cert.pem": try Self.pki.read(Self.pki.clientCertificate)])
        #expect(loaded.errors.isEmpty, "\(loaded.errors)")
        return try #require(loaded.instances["alpha"])
    }

    /// The JWT the request carries as `client_assertion`, signed at ``now`` with `jti`.
    func clientAssertion(_ resolved: ResolvedInstance, jti: String = "jti-1", at now: Date = now) throws -> DecodedAssertion {
        let signed = try resolved.request.signingAssertion(now: now, jti: jti).get()
        let fields = WireDecoding.formDictionary(String(decoding: signed.body, as: UTF8.self))
        #expect(fields["client_assertion_type"] == ClientAssertion.assertionType)
        return try DecodedAssertion(try #require(fields["client_assertion"]))
    }

    // MARK: - Algorithms

    static let asymmetric: [(alg: String, key: @Sendable () -> String, publicKey: @Sendable () -> String)] = [
        ("RS256", { rsa.pemRepresentation }, { rsa.publicKey.pemRepresentation }),
        ("PS256", { rsa.pemRepresentation }, { rsa.publicKey.pemRepresentation }),
        ("ES256", { ec.pemRepresentation }, { ec.publicKey.pemRepresentation }),
        ("EdDSA", { ed.pemRepresentation }, { ed.publicKey.pemRepresentation }),
    ]

    @Test(arguments: 0..<4) func eachAsymmetricAlgorithmVerifiesWithThePublicKeyOnly(_ index: Int) throws {
        let (alg, key, publicKey) = Self.asymmetric[index]
        let resolved = try resolve(instance(assertion: "alg = \"\(alg)\""), key: key())
        let decoded = try clientAssertion(resolved)
        #expect(decoded.algorithm == alg)
        #expect(decoded.headerString("typ") == "JWT")
        #expect(decoded.verifies(publicKeyPEM: publicKey()))
        let otherRSA = try _RSA.Signing.PrivateKey(keySize: .bits2048).publicKey.pemRepresentation
        let others = [
            otherRSA, P256.Signing.PrivateKey().publicKey.pemRepresentation, Curve25519.Signing.PrivateKey().publicKey.pemRepresentation,
        ]
        #expect(others.allSatisfy { !decoded.verifies(publicKeyPEM: $0) })
        if alg == "PS256" {
            // A PSS signature is not a PKCS #1 v1.5 one: read as RS256 it must fail.
            var asRS256 = decoded
            asRS256.header["alg"] = .string("RS256")
            #expect(!asRS256.verifies(publicKeyPEM: publicKey()))
        }
    }

    @Test func hs256SignsWithTheClientSecret() throws {
        let text = instance(
            clientAuth: "client_secret_jwt",
            assertion: "alg = \"HS256\"",
            variables: "client_secret = { file = \"/s/key.pem\" }"
        )
        let decoded = try clientAssertion(try resolve(text, key: "a shared secret of some length"))
        #expect(decoded.algorithm == "HS256")
        #expect(decoded.verifies(secret: "a shared secret of some length"))
        #expect(!decoded.verifies(secret: "another secret"))
    }

    // MARK: - Claims and header

    @Test func defaultsAreTheClientIDAndTheTokenURLAndLifetimeSetsExp() throws {
        let resolved = try resolve(instance(assertion: "alg = \"RS256\"\nlifetime = \"5m\""), key: Self.rsa.pemRepresentation)
        let decoded = try clientAssertion(resolved)
        #expect(decoded.string("iss") == "client-42")
        #expect(decoded.string("sub") == "client-42")
        #expect(decoded.string("aud") == Self.tokenURL)
        #expect(decoded.number("iat") == 1_800_000_123)
        #expect(decoded.number("nbf") == 1_800_000_123)
        #expect(decoded.number("exp") == 1_800_000_423)
        #expect(decoded.string("jti") == "jti-1")
        #expect(Set(decoded.claims.keys) == ["iss", "sub", "aud", "jti", "iat", "nbf", "exp"])
        #expect(decoded.header["kid"] == nil, "kid renders empty: left out")
        #expect(Set(decoded.header.keys) == ["alg", "typ"])
    }

    @Test func theDefaultLifetimeIsSixtySeconds() throws {
        let decoded = try clientAssertion(try resolve(instance(assertion: "alg = \"ES256\""), key: Self.ec.pemRepresentation))
        #expect(decoded.number("exp") == 1_800_000_183)
    }

    @Test func givenClaimsReplaceTheirDefaultsAndTheOthersStay() throws {
        let text = instance(
            clientAuth: "none",
            assertion: """
                alg = "RS256"
                kid = "{{key_id}}"
                [assertion.claims]
                iss   = "{{client_email}}"
                aud   = "https://oauth2.example.com/token"
                scope = "{{scope}}"
                admin = true
                level = 3
                roles = ["reader", "{{client_id}}"]
                empty = "{{nothing}}"
                """,
            variables: """
                private_key  = { file = "/s/key.pem" }
                client_email = "robot@project.iam.example.com"
                key_id       = "k-2026"
                nothing      = ""
                """,
            body: "[body]\ngrant_type = \"urn:ietf:params:oauth:grant-type:jwt-bearer\"\nassertion = \"{{assertion}}\""
        )
        let resolved = try resolve(text, key: Self.rsa.pemRepresentation)
        let signed = try resolved.request.signingAssertion(now: Self.now, jti: "j").get()
        let fields = WireDecoding.formDictionary(String(decoding: signed.body, as: UTF8.self))
        #expect(fields["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer")
        #expect(
            fields["client_assertion"] == nil && fields["client_assertion_type"] == nil,
            "client_auth = none: the grant is the assertion"
        )
        let decoded = try DecodedAssertion(try #require(fields["assertion"]))
        #expect(decoded.verifies(publicKeyPEM: Self.rsa.publicKey.pemRepresentation))
        #expect(decoded.string("iss") == "robot@project.iam.example.com")
        #expect(decoded.string("sub") == "client-42", "sub was not given: its default stays")
        #expect(decoded.string("aud") == "https://oauth2.example.com/token")
        #expect(decoded.string("scope") == "api://resource/.default")
        #expect(decoded.claims["admin"] == .bool(true))
        #expect(decoded.number("level") == 3)
        #expect(decoded.claims["roles"] == .array([.string("reader"), .string("client-42")]))
        #expect(decoded.claims["empty"] == nil, "a claim that renders empty is left out")
        #expect(decoded.headerString("kid") == "k-2026")
    }

    @Test func aClaimGivenEmptyRemovesItsDefault() throws {
        let text = instance(assertion: "alg = \"ES256\"\n[assertion.claims]\nsub = \"\"")
        let decoded = try clientAssertion(try resolve(text, key: Self.ec.pemRepresentation))
        #expect(decoded.claims["sub"] == nil)
        #expect(decoded.string("iss") == "client-42")
    }

    @Test func x5tS256AndX5tAreTheThumbprintsOfTheCertificateDER() throws {
        let text = instance(
            assertion: "alg = \"PS256\"\nx5t_s256 = true\nx5t = true",
            variables: "private_key = { file = \"/s/key.pem\" }\nclient_certificate = { file = \"/s/cert.pem\" }"
        )
        let resolved = try resolve(text, key: Self.rsa.pemRepresentation)
        #expect(resolved.tls.clientCertificatePEM == nil, "named for the thumbprint only: not presented on the connection")
        let decoded = try clientAssertion(resolved)
        let der = try Data(contentsOf: URL(fileURLWithPath: Self.pki.clientCertificateDER))
        #expect(decoded.headerString("x5t#S256") == DecodedAssertion.thumbprintSHA256(der: der))
        #expect(decoded.headerString("x5t") == DecodedAssertion.thumbprintSHA1(der: der))
        #expect(decoded.headerString("x5t#S256")?.count == 43, "32 bytes, base64url without padding")
        #expect(decoded.verifies(publicKeyPEM: Self.rsa.publicKey.pemRepresentation))
    }

    @Test func everySigningHasItsOwnJTIAndTimeButTheFingerprintStays() throws {
        let resolved = try resolve(instance(assertion: "alg = \"ES256\""), key: Self.ec.pemRepresentation)
        let first = try clientAssertion(resolved, jti: "first")
        let second = try clientAssertion(resolved, jti: "second", at: Self.now.addingTimeInterval(90))
        #expect(first.string("jti") == "first" && second.string("jti") == "second")
        #expect(second.number("iat") == 1_800_000_213)
        let again = try resolve(instance(assertion: "alg = \"ES256\""), key: Self.ec.pemRepresentation)
        #expect(again.fingerprint == resolved.fingerprint)
        let longer = try resolve(instance(assertion: "alg = \"ES256\"\nlifetime = \"2m\""), key: Self.ec.pemRepresentation)
        #expect(longer.fingerprint != resolved.fingerprint, "the assertion's definition is part of the fingerprint")
        let otherKey = try resolve(instance(assertion: "alg = \"ES256\""), key: P256.Signing.PrivateKey().pemRepresentation)
        #expect(otherKey.fingerprint != resolved.fingerprint, "so is the key")
    }

    @Test func theKeyNeverShowsInTheRequestOrItsDescription() throws {
        let pem = Self.rsa.pemRepresentation
        let text = instance(
            clientAuth: "none",
            assertion: "alg = \"RS256\"",
            body: "[body]\ngrant_type = \"urn:ietf:params:oauth:grant-type:jwt-bearer\"\nassertion = \"{{assertion}}\""
        )
        let resolved = try resolve(text, key: pem)
        let keyLine = String(pem.split(separator: "\n")[1])
        let described = TokenRequestBuilder.describe(resolved)
        #expect(!described.contains(keyLine) && !"\(resolved.request)".contains(keyLine))
        #expect(described.contains("assertion=%3CRS256+JWT+signed+for+each+request%3E") || described.contains("<RS256 JWT signed"))
        #expect(!described.contains(ClientAssertion.bodyMarker))
        #expect(resolved.definition.secretVariables.contains("private_key"))
    }

    @Test func aJSONBodyGetsTheAssertionInPlace() throws {
        let text = instance(
            clientAuth: "none",
            assertion: "alg = \"ES256\"",
            body:
                "content_type = \"application/json\"\n[body]\ngrant_type = \"urn:ietf:params:oauth:grant-type:jwt-bearer\"\nassertion = \"{{assertion}}\""
        ).replacingOccurrences(of: "content_type = \"application/json\"\n", with: "")
            .replacingOccurrences(of: "client_auth = \"none\"", with: "client_auth = \"none\"\ncontent_type = \"application/json\"")
        let resolved = try resolve(text, key: Self.ec.pemRepresentation)
        let signed = try resolved.request.signingAssertion(now: Self.now, jti: "j").get()
        let object = try #require(try JSONSerialization.jsonObject(with: Data(signed.body)) as? [String: String])
        let decoded = try DecodedAssertion(try #require(object["assertion"]))
        #expect(decoded.verifies(publicKeyPEM: Self.ec.publicKey.pemRepresentation))
    }

    // MARK: - Config errors

    func errors(_ text: String, key: String = rsa.pemRepresentation) -> [ConfigDiagnostic] {
        load(text, files: ["/s/key.pem": key]).errors
    }

    @Test func anUnknownAlgorithmNamesFileLineAndKey() throws {
        let error = try #require(errors(instance(assertion: "alg = \"RS512\"")).first)
        #expect(error.file == "/c/instances/alpha.toml")
        #expect(error.key == "assertion.alg")
        #expect(error.line == 10)
        #expect(error.message.contains("expected one of") && error.message.contains("\"PS256\""))
    }

    @Test(arguments: [
        ("ES256", "rsa", "an RSA key cannot sign ES256"),
        ("RS256", "ec", "an EC P-256 key cannot sign RS256"),
        ("PS256", "ed", "an Ed25519 key cannot sign PS256"),
        ("EdDSA", "rsa", "an RSA key cannot sign EdDSA"),
    ])
    func aKeyOfTheWrongKindIsAConfigError(_ alg: String, _ kind: String, _ message: String) throws {
        let key = ["rsa": Self.rsa.pemRepresentation, "ec": Self.ec.pemRepresentation, "ed": Self.ed.pemRepresentation][kind]!
        let error = try #require(errors(instance(assertion: "alg = \"\(alg)\""), key: key).first)
        #expect(error.key == "variables.private_key")
        #expect(error.line == 7)
        #expect(error.message.hasPrefix(message), "\(error.message)")
        #expect(error.message.contains("alpha.toml:10"), "names where alg is written: \(error.message)")
        #expect(!error.message.contains(String(key.split(separator: "\n")[1])))
    }

    @Test func aMissingKeyIsAMissingRequiredVariable() throws {
        let hs = errors(instance(clientAuth: "none", assertion: "alg = \"HS256\"", variables: ""))
        #expect(hs.contains { $0.key == "variables.client_secret" && $0.message.contains("missing required variable") }, "\(hs)")
        let rs = errors(instance(clientAuth: "none", assertion: "alg = \"RS256\"", variables: ""))
        #expect(rs.contains { $0.key == "variables.private_key" && $0.message.contains("missing required variable") }, "\(rs)")
    }

    @Test func aThumbprintWithoutACertificateIsAConfigError() throws {
        let missing = errors(instance(assertion: "alg = \"PS256\"\nx5t_s256 = true"))
        #expect(
            missing.contains { $0.key == "variables.client_certificate" && $0.message.contains("missing required variable") },
            "\(missing)"
        )
        let notACertificate = load(
            instance(
                assertion: "alg = \"PS256\"\nx5t = true",
                variables: "private_key = { file = \"/s/key.pem\" }\nclient_certificate = { file = \"/s/cert.pem\" }"
            ),
            files: ["/s/key.pem": Self.rsa.pemRepresentation, "/s/cert.pem": "not a certificate"]
        ).errors
        let error = try #require(notACertificate.first)
        #expect(error.key == "variables.client_certificate" && error.line == 8)
        #expect(error.message.contains("expected a PEM certificate"))
        let hmac = errors(instance(clientAuth: "client_secret_jwt", assertion: "alg = \"HS256\"\nx5t_s256 = true"))
        #expect(hmac.contains { $0.key == "assertion.x5t_s256" && $0.line == 11 }, "\(hmac)")
    }

    @Test(arguments: ["\"0s\"", "\"2h\"", "\"soon\"", "-5"])
    func aBadLifetimeIsAConfigError(_ lifetime: String) throws {
        let error = try #require(errors(instance(assertion: "alg = \"RS256\"\nlifetime = \(lifetime)")).first)
        #expect(error.key == "assertion.lifetime")
        #expect(error.line == 11)
    }

    @Test func reservedClaimsUnknownKeysAndAStrayAssertionPlaceholderAreErrors() throws {
        let reserved = errors(instance(assertion: "alg = \"RS256\"\n[assertion.claims]\nexp = 1"))
        #expect(reserved.contains { $0.key == "assertion.claims.exp" && $0.line == 12 }, "\(reserved)")
        let unknown = errors(instance(assertion: "alg = \"RS256\"\nx5t_256 = true"))
        #expect(unknown.contains { $0.key == "assertion.x5t_256" && $0.message.contains("did you mean 'x5t_s256'") }, "\(unknown)")
        let mismatch = errors(instance(clientAuth: "client_secret_jwt", assertion: "alg = \"RS256\""))
        #expect(mismatch.contains { $0.key == "assertion.alg" && $0.message.contains("private_key_jwt") }, "\(mismatch)")
        let noTable = errors(
            """
            token_url = "https://idp.example.com/token"
            client_auth = "none"
            [variables]
            client_id = "c"
            [body]
            assertion = "{{assertion}}"
            """
        )
        #expect(noTable.contains { $0.key == "body.assertion" && $0.line == 6 && $0.message.contains("[assertion] table") }, "\(noTable)")
        let inHeader = errors(
            instance(clientAuth: "none", assertion: "alg = \"RS256\"", body: "[headers]\nX-Assertion = \"{{assertion}}\"")
        )
        #expect(inHeader.contains { $0.key == "headers.X-Assertion" && $0.message.contains("only in [body]") }, "\(inHeader)")
    }

    @Test func aConnectorFileDeclaresTheKeyAndReportsItsOwnLines() throws {
        let connector = """
            token_url   = "https://oauth2.example.com/token"
            client_auth = "none"

            [assertion]
            alg = "RS256"
            kid = "{{private_key_id}}"
            [assertion.claims]
            iss = "{{client_email}}"
            aud = "https://oauth2.example.com/token"

            [body]
            grant_type = "urn:ietf:params:oauth:grant-type:jwt-bearer"
            assertion  = "{{assertion}}"
            """
        let (parsed, diagnostics) = ConfigParser.parseConnector(name: "google", file: "/c/connectors/google.toml", text: connector)
        let errors = diagnostics.filter { $0.severity == .error }
        #expect(errors.count == 2, "\(errors)")
        #expect(
            errors.contains { $0.key == "assertion.kid" && $0.line == 6 && $0.message.contains("{{private_key_id}} names no variable") }
        )
        #expect(errors.contains { $0.key == "assertion.claims.iss" && $0.line == 8 })
        #expect(parsed == nil)
        let declared = connector + "\n[variables.private_key_id]\nrequired = true\n[variables.client_email]\nrequired = true\n"
        let (good, none) = ConfigParser.parseConnector(name: "google", file: "/c/connectors/google.toml", text: declared)
        #expect(none.isEmpty, "\(none)")
        #expect(good?.variables["private_key"]?.required == true && good?.variables["private_key"]?.secret == true)
        #expect(good?.variables["client_secret"]?.required == false)
    }
}
