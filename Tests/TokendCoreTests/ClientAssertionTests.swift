import Crypto
import Foundation
import Testing
import TokendTestSupport
import _CryptoExtras

@testable import TokendCore

/// RFC 7523 client assertions: every header field and claim, and the signature checked with the public key.
@Suite struct ClientAssertionTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_123.75)
    static let rsa = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
    static let ec = P256.Signing.PrivateKey()

    func assertion(_ pem: String, algorithm: AssertionAlgorithm, kid: String? = "key-1") -> ClientAssertion {
        ClientAssertion(
            clientID: "client-42",
            audience: "https://idp.example.com/oauth2/token",
            keyID: kid,
            keyMaterial: Secret(pem),
            algorithm: algorithm
        )
    }

    func checkClaims(_ decoded: DecodedAssertion, algorithm: String, kid: String?) {
        #expect(decoded.header["alg"] == .string(algorithm))
        #expect(decoded.header["typ"] == .string("JWT"))
        #expect(decoded.header["kid"] == kid.map { TestJSON.string($0) })
        #expect(Set(decoded.header.keys) == Set(["alg", "typ"] + (kid == nil ? [] : ["kid"])))
        #expect(decoded.string("iss") == "client-42")
        #expect(decoded.string("sub") == "client-42")
        #expect(decoded.string("aud") == "https://idp.example.com/oauth2/token")
        #expect(decoded.string("jti") == "jti-0001")
        #expect(decoded.number("iat") == 1_800_000_123)
        #expect(decoded.number("nbf") == 1_800_000_123)
        #expect(decoded.number("exp") == 1_800_000_183)
        #expect(Set(decoded.claims.keys) == ["iss", "sub", "aud", "jti", "iat", "nbf", "exp"])
    }

    @Test func rs256AssertionCarriesEveryClaimAndVerifiesWithThePublicKey() throws {
        let jwt = try assertion(Self.rsa.pemRepresentation, algorithm: .rs256).signed(now: Self.now, jti: "jti-0001").get()
        let decoded = try DecodedAssertion(jwt)
        checkClaims(decoded, algorithm: "RS256", kid: "key-1")
        #expect(decoded.verifies(publicKeyPEM: Self.rsa.publicKey.pemRepresentation))
        let other = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        #expect(!decoded.verifies(publicKeyPEM: other.publicKey.pemRepresentation))
    }

    @Test func es256AssertionCarriesEveryClaimAndVerifiesWithThePublicKey() throws {
        let jwt = try assertion(Self.ec.pemRepresentation, algorithm: .es256, kid: nil).signed(now: Self.now, jti: "jti-0001").get()
        let decoded = try DecodedAssertion(jwt)
        checkClaims(decoded, algorithm: "ES256", kid: nil)
        #expect(decoded.signature.count == 64, "ES256 signatures are r‖s, 64 bytes (RFC 7518 §3.4)")
        #expect(decoded.verifies(publicKeyPEM: Self.ec.publicKey.pemRepresentation))
        #expect(!decoded.verifies(publicKeyPEM: P256.Signing.PrivateKey().publicKey.pemRepresentation))
    }

    @Test func hs256AssertionIsAnHMACOverTheClientSecret() throws {
        let jwt = try assertion("the client secret", algorithm: .hs256).signed(now: Self.now, jti: "jti-0001").get()
        let decoded = try DecodedAssertion(jwt)
        checkClaims(decoded, algorithm: "HS256", kid: "key-1")
        #expect(decoded.verifies(secret: "the client secret"))
        #expect(!decoded.verifies(secret: "another secret"))
    }

    @Test func aTamperedClaimNoLongerVerifies() throws {
        let jwt = try assertion(Self.ec.pemRepresentation, algorithm: .es256).signed(now: Self.now, jti: "jti-0001").get()
        var parts = jwt.split(separator: ".").map(String.init)
        let claims =
            #"{"aud":"https://evil.example","exp":1800000183,"iat":1800000123,"iss":"client-42","jti":"jti-0001","nbf":1800000123,"sub":"client-42"}"#
        parts[1] = WireDecoding.base64URLEncoded(Data(claims.utf8))
        let decoded = try DecodedAssertion(parts.joined(separator: "."))
        #expect(!decoded.verifies(publicKeyPEM: Self.ec.publicKey.pemRepresentation))
    }

    @Test func keysAreRecognisedAndBadOnesRefusedWithoutEchoingThem() throws {
        #expect(try AssertionKey.parse(pem: Self.rsa.pemRepresentation).get().algorithm == .rs256)
        #expect(try AssertionKey.parse(pem: Self.ec.pemRepresentation).get().algorithm == .es256)
        let garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
        guard case .failure(let error) = AssertionKey.parse(pem: garbage) else {
            Issue.record("garbage accepted")
            return
        }
        #expect(!error.message.contains("bm90IGEga2V5"))
        guard case .failure = AssertionKey.parse(pem: "just some text") else {
            Issue.record("non-PEM accepted")
            return
        }
    }

    // MARK: - Through the config

    func privateKeyJWTInstance(extra: String = "", body: String = "") -> String {
        """
        token_url   = "https://idp.example.com/oauth2/token?tenant=a"
        client_auth = "private_key_jwt"
        \(extra)
        [variables]
        client_id   = "client-42"
        private_key = { file = "/s/key.pem" }
        kid         = "2026-key"
        scope       = "read"
        resource    = "https://api.example.com/"
        \(body)
        """
    }

    func load(_ text: String, key: String) -> ConfigLoader.Loaded {
        let input = ConfigLoader.Input(settings: nil, instances: [("alpha", .success(.init(path: "/c/instances/alpha.toml", text: text)))])
        return ConfigLoader.load(input) { source in
            guard case .file("/s/key.pem") = source else { return .failure(.init("no such file")) }
            return .success(.init(key))
        }
    }

    @Test func privateKeyJWTRequestsCarryAFreshAssertionAndNoKey() throws {
        let pem = Self.ec.pemRepresentation
        let loaded = load(privateKeyJWTInstance(), key: pem)
        #expect(loaded.errors.isEmpty, "\(loaded.errors)")
        let resolved = try #require(loaded.instances["alpha"])
        let unsigned = String(decoding: resolved.request.body, as: UTF8.self)
        #expect(unsigned == "grant_type=client_credentials&scope=read&resource=https%3A%2F%2Fapi.example.com%2F&client_id=client-42")
        let first = try resolved.request.signingAssertion(now: Self.now, jti: "one").get()
        let second = try resolved.request.signingAssertion(now: Self.now.addingTimeInterval(30), jti: "two").get()
        let fields = WireDecoding.formDictionary(String(decoding: first.body, as: UTF8.self))
        #expect(fields["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        let decoded = try DecodedAssertion(try #require(fields["client_assertion"]))
        #expect(decoded.string("aud") == "https://idp.example.com/oauth2/token", "aud is the token URL without its query")
        #expect(decoded.header["kid"] == .string("2026-key"))
        #expect(decoded.string("jti") == "one")
        #expect(decoded.verifies(publicKeyPEM: Self.ec.publicKey.pemRepresentation))
        #expect(first.body != second.body)
        #expect(resolved.request.headers.allSatisfy { $0.name != "Authorization" })
        let keyBody = pem.split(separator: "\n")[1]
        #expect(!"\(resolved.request)".contains(keyBody) && !TokenRequestBuilder.describe(resolved).contains(keyBody))
        #expect(!resolved.fingerprint.isEmpty && !"\(resolved.request.assertion!)".contains(keyBody))
        #expect(resolved.definition.secretVariables.contains("private_key"))
        #expect(
            TokenRequestBuilder.describe(resolved).hasSuffix(
                "(+ client_assertion_type=\(ClientAssertion.assertionType), client_assertion=<ES256 JWT signed for each request: "
                    + "iss=sub=client-42, aud=https://idp.example.com/oauth2/token, kid=2026-key>)"
            )
        )
    }

    @Test func assertionAudienceOverridesTheTokenURLAndJSONBodiesGetTheFieldsToo() throws {
        let loaded = load(
            privateKeyJWTInstance(extra: "assertion_audience = \"https://idp.example.com/\"\ncontent_type = \"application/json\""),
            key: Self.rsa.pemRepresentation
        )
        let resolved = try #require(loaded.instances["alpha"], "\(loaded.errors)")
        let signed = try resolved.request.signingAssertion(now: Self.now, jti: "x").get()
        let object = try #require(try JSONSerialization.jsonObject(with: Data(signed.body)) as? [String: String])
        #expect(object["client_assertion_type"] == ClientAssertion.assertionType)
        #expect(object["client_id"] == "client-42")
        let decoded = try DecodedAssertion(try #require(object["client_assertion"]))
        #expect(decoded.algorithm == "RS256")
        #expect(decoded.string("aud") == "https://idp.example.com/")
    }

    @Test func anInvalidPrivateKeyIsAConfigErrorNamingFileLineAndKey() throws {
        let loaded = load(privateKeyJWTInstance(), key: "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n")
        #expect(loaded.instances.isEmpty)
        let error = try #require(loaded.errors.first)
        #expect(error.file == "/c/instances/alpha.toml")
        #expect(error.key == "variables.private_key")
        #expect(error.line == 6)
        #expect(error.message.contains("invalid private key"))
        #expect(!error.description.contains("c2VjcmV0LWJ5dGVz"))
    }

    @Test func privateKeyJWTWithoutAKeyIsAMissingRequiredVariable() {
        let (definition, diagnostics) = parseInstance(
            "token_url = \"https://idp.example.com/token\"\nclient_auth = \"private_key_jwt\"\n[variables]\nclient_id = \"x\"\n"
        )
        #expect(definition == nil)
        #expect(diagnostics.contains { $0.key == "variables.private_key" && $0.message.contains("missing required variable") })
    }

    @Test func clientSecretJWTSignsWithTheSecretAndSendsNoSecret() throws {
        let text =
            "token_url = \"https://idp.example.com/token\"\nclient_auth = \"client_secret_jwt\"\n[variables]\nclient_id = \"c\"\nclient_secret = { file = \"/s/key.pem\" }\n"
        let resolved = try #require(load(text, key: "hmac-secret-value").instances["alpha"])
        let signed = try resolved.request.signingAssertion(now: Self.now, jti: "j").get()
        let body = String(decoding: signed.body, as: UTF8.self)
        #expect(!body.contains("hmac-secret-value") && !body.contains("client_secret="))
        let fields = WireDecoding.formDictionary(body)
        #expect(try DecodedAssertion(try #require(fields["client_assertion"])).verifies(secret: "hmac-secret-value"))
    }
}
