import Foundation
import NIOSSL
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Issue #7 with the real binary: HTTPS token endpoints under a CA made by the test, mTLS, signed client assertions,
/// issuer discovery, an outbound CONNECT proxy and refused redirects.
@Suite(.serialized, .timeLimit(.minutes(3))) struct TLSEndToEndTests {
    /// The harness, a PKI made with openssl, and an HTTPS token endpoint signed by its CA.
    struct Setup {
        let harness: DaemonHarness
        let pki: TestPKI
        let server: LocalTokenServer
    }

    /// Runs `body` with a ``Setup``; the harness's awaited teardown stops the daemon and the endpoint (whose tokens
    /// the secrets audit looks for) and removes the PKI.
    func withSetup(
        requireClientCertificate: Bool = false,
        maximumVersion: TLSVersion? = nil,
        _ body: (Setup) async throws -> Void
    ) async throws {
        try await DaemonHarness.with { harness in
            let pki = try TestPKI.make()
            harness.onTearDown { pki.remove() }
            let server = LocalTokenServer()
            harness.adopt(server)
            try server.useTLS(
                certificatePath: pki.serverCertificate,
                keyPath: pki.serverKey,
                clientCAPath: requireClientCertificate ? pki.caCertificate : nil,
                maximumVersion: maximumVersion
            )
            try await server.start(port: 0)
            try await body(Setup(harness: harness, pki: pki, server: server))
        }
    }

    /// Writes an inline instance: `location` (the token_url line by default, or an issuer line), client_auth,
    /// ca_file, then client_id and its credentials (client_secret from a file unless `credentials` says otherwise).
    func instance(
        _ setup: Setup,
        _ name: String,
        auth: String = "client_secret_basic",
        caFile: String?,
        location: String? = nil,
        clientID: String? = nil,
        credentials: String? = nil
    ) throws {
        let secret = try setup.harness.writeSecret(name, "secret-of-\(name)")
        try setup.harness.writeRaw(
            name,
            """
            \(location ?? "token_url   = \"\(setup.server.tokenURL)\"")
            client_auth = "\(auth)"
            \(caFile.map { "ca_file     = \"\($0)\"" } ?? "")

            [variables]
            client_id     = "\(clientID ?? name)"
            \(credentials ?? "client_secret = { file = \"\(secret)\" }")
            """
        )
    }

    func lastError(_ harness: DaemonHarness, _ name: String) async throws -> API.LastError? {
        try await harness.get("/v1/instances").json(API.InstancesBody.self).instances.first { $0.name == name }?.last_error
    }

    @Test func aPrivateCAIsTrustedThroughCAFileAndRefusedWithoutIt() async throws {
        try await withSetup { setup in
            try instance(setup, "trusted", caFile: setup.pki.caCertificate)
            try instance(setup, "untrusted", caFile: nil)
            try instance(setup, "wrong-ca", caFile: setup.pki.otherCACertificate)
            try setup.harness.start()
            try await setup.harness.waitUntilReady()

            let token = try await setup.harness.token("trusted")
            #expect(token != nil && setup.server.issuedTokens.contains(token ?? ""))
            #expect(setup.server.requests.allSatisfy { $0.header("authorization")?.hasPrefix("Basic ") == true })
            for (name, why) in [
                ("untrusted", "(CERTIFICATE_VERIFY_FAILED; for a private CA set ca_file)"),
                ("wrong-ca", "(CERTIFICATE_VERIFY_FAILED; checked against ca_file \(setup.pki.otherCACertificate) and the system CAs)"),
            ] {
                #expect(try await setup.harness.token(name) == nil)
                let error = try #require(try await lastError(setup.harness, name), "\(name) has no last error")
                #expect(error.code == "tls")
                #expect(
                    error.message == "TLS handshake with 127.0.0.1:\(setup.server.port) failed: its certificate is not trusted \(why)",
                    "\(error.message)"
                )
            }
            // Only the trusted instance reached the endpoint's HTTP layer.
            #expect(setup.server.requestCount == 1)
        }
    }

    @Test func aServerThatSpeaksOnlyTLS11IsRefused() async throws {
        try await withSetup(maximumVersion: .tlsv11) { setup in
            try instance(setup, "old-tls", caFile: setup.pki.caCertificate)
            try setup.harness.start()
            try await setup.harness.waitUntilReady()
            #expect(try await setup.harness.token("old-tls") == nil)
            let error = try #require(try await lastError(setup.harness, "old-tls"))
            #expect(
                error.code == "tls"
                    && error.message.hasPrefix("TLS handshake with 127.0.0.1:\(setup.server.port) failed: no TLS version in common ("),
                "\(error.message)"
            )
            #expect(setup.server.requestCount == 0)
        }
    }

    @Test func mutualTLSRequiredByTheServerIsSatisfiedByTLSClientAuth() async throws {
        try await withSetup(requireClientCertificate: true) { setup in
            let pki = setup.pki
            try instance(
                setup,
                "mtls",
                auth: "tls_client_auth",
                caFile: pki.caCertificate,
                clientID: "mtls-client",
                credentials: "client_certificate = { file = \"\(pki.clientCertificate)\" }\nclient_key = { file = \"\(pki.clientKey)\" }"
            )
            try instance(setup, "no-certificate", caFile: pki.caCertificate)
            try setup.harness.start()
            try await setup.harness.waitUntilReady()

            #expect(try await setup.harness.token("mtls") != nil)
            let request = try #require(setup.server.requests.first)
            #expect(request.formFields["client_id"] == "mtls-client")
            #expect(request.header("authorization") == nil && request.formFields["client_secret"] == nil)
            #expect(try await setup.harness.token("no-certificate") == nil)
            // Refused by the server in the handshake, and said so: not any error, this one.
            let refused = try #require(try await lastError(setup.harness, "no-certificate"), "no-certificate has no last error")
            #expect(refused.code == "tls" && refused.kind == "transient", "\(refused)")
            #expect(
                refused.message.hasPrefix("TLS handshake with 127.0.0.1:\(setup.server.port) failed: ")
                    && refused.message.contains("CERTIFICATE_REQUIRED"),
                "\(refused.message)"
            )
            #expect(setup.server.requests.allSatisfy { $0.formFields["client_id"] == "mtls-client" }, "an uncertified request reached HTTP")
            let key = try pki.read(pki.clientKey).split(separator: "\n")[1]
            #expect(!setup.harness.log.contains(key))
        }
    }

    @Test func anInvalidPEMIsAConfigErrorWithFileAndLine() async throws {
        try await withSetup { setup in
            let bogus = try setup.harness.writeSecret("bogus.pem", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
            try instance(setup, "bad-ca", caFile: bogus)
            try instance(setup, "bad-key", auth: "private_key_jwt", caFile: nil, credentials: "private_key = { file = \"\(bogus)\" }")
            let (status, _, stderr) = try setup.harness.runCLI(["check", "--config-dir", setup.harness.configDir])
            #expect(status == 1)
            #expect(
                stderr.contains("\(setup.harness.configDir)/instances/bad-ca.toml:3: ca_file: \(bogus) holds no PEM certificate"),
                "\(stderr)"
            )
            #expect(
                stderr.contains("\(setup.harness.configDir)/instances/bad-key.toml:7: variables.private_key: invalid private key"),
                "\(stderr)"
            )
        }
    }

    @Test func privateKeyJWTAssertionsAreVerifiedByTheEndpointWithThePublicKey() async throws {
        try await withSetup { setup in
            let pki = setup.pki
            let tokenURL = setup.server.tokenURL
            let keys = ["rs": try pki.read(pki.rsaPublicKey), "es": try pki.read(pki.ecPublicKey)]
            setup.server.requireClientAssertion { jwt in
                guard let decoded = try? DecodedAssertion(jwt), let client = decoded.string("iss"), let key = keys[client] else {
                    return "unknown client"
                }
                return decoded.problem(publicKeyPEM: key, clientID: client, audience: tokenURL)
            }
            for (name, keyPath) in [("rs", pki.rsaKey), ("es", pki.ecKey)] {
                try instance(
                    setup,
                    name,
                    auth: "private_key_jwt",
                    caFile: pki.caCertificate,
                    credentials: "private_key = { file = \"\(keyPath)\" }\nkid = \"\(name)-key-1\""
                )
            }
            // Signed with a key the endpoint does not know: refused.
            try instance(
                setup,
                "forged",
                auth: "private_key_jwt",
                caFile: pki.caCertificate,
                clientID: "rs",
                credentials: "private_key = { file = \"\(pki.ecKey)\" }"
            )
            try setup.harness.start()
            try await setup.harness.waitUntilReady()

            #expect(try await setup.harness.token("rs") != nil)
            #expect(try await setup.harness.token("es") != nil)
            #expect(try await setup.harness.token("forged") == nil)
            #expect(try await lastError(setup.harness, "forged")?.code == "invalid_client")
            let assertions = try setup.server.requests.compactMap { $0.formFields["client_assertion"] }.map { try DecodedAssertion($0) }
            #expect(Set(assertions.compactMap { $0.string("jti") }).count == assertions.count, "every assertion has its own jti")
            #expect(Set(assertions.compactMap(\.algorithm)) == ["RS256", "ES256"])
            #expect(assertions.contains { $0.header["kid"] == .string("es-key-1") })
            let keyLine = try pki.read(pki.rsaKey).split(separator: "\n")[1]
            #expect(!setup.harness.log.contains(keyLine))
            #expect(setup.server.requests.allSatisfy { !$0.bodyText.contains(keyLine) })
        }
    }

    @Test func anIssuerIsDiscoveredFromItsWellKnownDocuments() async throws {
        try await withSetup { setup in
            let server = setup.server
            let issuer = server.baseURL
            server.serveDocument(
                path: "/.well-known/openid-configuration",
                json:
                    #"{"issuer":"\#(issuer)","token_endpoint":"\#(issuer)/oidc/token","token_endpoint_auth_methods_supported":["client_secret_basic","private_key_jwt"]}"#
            )
            server.serveDocument(
                path: "/.well-known/oauth-authorization-server",
                json: #"{"issuer":"\#(issuer)","token_endpoint":"\#(issuer)/as/token"}"#
            )
            // An issuer with only the RFC 8414 document (the OpenID one is a 404 there).
            let plain = LocalTokenServer()
            setup.harness.adopt(plain)
            try await plain.start(port: 0)
            plain.serveDocument(
                path: "/.well-known/oauth-authorization-server/tenant",
                json: #"{"issuer":"\#(plain.baseURL)/tenant","token_endpoint":"\#(plain.baseURL)/tenant/token"}"#
            )

            for (name, auth, issuerURL) in [
                ("oidc", "client_secret_basic", issuer), ("rfc8414", "client_secret_post", plain.baseURL + "/tenant"),
                ("unoffered", "client_secret_post", issuer),
            ] {
                try instance(setup, name, auth: auth, caFile: setup.pki.caCertificate, location: "issuer = \"\(issuerURL)\"")
            }
            let (status, _, stderr) = try setup.harness.runCLI(["check", "--config-dir", setup.harness.configDir])
            #expect(status == 1)
            #expect(
                stderr.contains(
                    "\(setup.harness.configDir)/instances/unoffered.toml:1: issuer: issuer \(issuer) does not offer client_auth \"client_secret_post\" (it offers: client_secret_basic, private_key_jwt)"
                ),
                "\(stderr)"
            )
            #expect(!stderr.contains("oidc.toml") && !stderr.contains("rfc8414.toml"), "\(stderr)")

            try setup.harness.start()
            try await setup.harness.waitUntilReady()
            #expect(try await setup.harness.token("oidc") != nil)
            #expect(try await setup.harness.token("rfc8414") != nil)
            #expect(server.requests.contains { $0.method == "POST" && $0.uri == "/oidc/token" })
            #expect(!server.requests.contains { $0.uri == "/as/token" }, "the OpenID document comes first")
            #expect(plain.requests.map(\.uri).contains("/tenant/token"))
            #expect(plain.requests.first?.uri == "/tenant/.well-known/openid-configuration")

            // A reload reads the documents again: a moved token endpoint is picked up, with a new token.
            let before = try await setup.harness.token("oidc")
            server.serveDocument(
                path: "/.well-known/openid-configuration",
                json: #"{"issuer":"\#(issuer)","token_endpoint":"\#(issuer)/oidc/v2/token"}"#
            )
            setup.harness.signal(SIGHUP)
            try await setup.harness.waitUntilReady(count: 2)
            try await eventually("a token from the rediscovered endpoint") {
                server.requests.contains { $0.uri == "/oidc/v2/token" }
            }
            try await eventually("the new token is served") { try await setup.harness.token("oidc") != before }
        }
    }

    @Test func tokenRequestsGoThroughTheProxyFromTheEnvironment() async throws {
        try await withSetup { setup in
            let proxy = ConnectProxy()
            setup.harness.onTearDown { await proxy.stop() }
            try await proxy.start()
            try instance(setup, "proxied", caFile: setup.pki.caCertificate)
            // http:// to a loopback host goes direct even with HTTPS_PROXY set (the test proxy refuses plain requests).
            try setup.harness.writeInstance("plain-http")
            try setup.harness.start(environment: ["HTTPS_PROXY": "http://127.0.0.1:\(proxy.port)"])
            try await setup.harness.waitUntilReady()

            #expect(try await setup.harness.token("proxied") != nil)
            #expect(try await setup.harness.token("plain-http") != nil)
            #expect(proxy.tunnelCount >= 1)
            #expect(proxy.targets.allSatisfy { $0 == "127.0.0.1:\(setup.server.port)" })
        }
    }

    @Test func noProxyInTheSettingsSendsRequestsDirect() async throws {
        try await withSetup { setup in
            let proxy = ConnectProxy()
            setup.harness.onTearDown { await proxy.stop() }
            try await proxy.start()
            let settings = DaemonHarness.fastSettings + "\n[http]\nproxy = \"http://127.0.0.1:\(proxy.port)\"\nno_proxy = [\"127.0.0.1\"]\n"
            try settings.write(toFile: setup.harness.configDir + "/tokend.toml", atomically: true, encoding: .utf8)
            try instance(setup, "direct", caFile: setup.pki.caCertificate)
            try setup.harness.start()
            try await setup.harness.waitUntilReady()
            #expect(try await setup.harness.token("direct") != nil)
            #expect(proxy.tunnelCount == 0)
        }
    }

    @Test func aRedirectIsNotFollowedAndItsLocationIsInTheError() async throws {
        try await DaemonHarness.with { harness in
            let moved = harness.endpoint.baseURL + "/moved/token"
            harness.endpoint.setBehavior(.respond(status: 302, headers: [.init("Location", moved)], body: ""))
            try harness.writeInstance("redirected")
            try harness.start()
            try await harness.waitUntilReady()

            #expect(try await harness.token("redirected") == nil)
            let error = try #require(try await lastError(harness, "redirected"))
            #expect(error.code == "redirect" && error.kind == "transient")
            #expect(error.message.contains("redirect to \(moved) not followed"), "\(error.message)")
            #expect(!harness.endpoint.requests.contains { $0.uri.hasPrefix("/moved") })
        }
    }
}
