import Foundation
import Testing

@testable import TokendCore

/// Issuer discovery (OpenID Connect Discovery, RFC 8414), TLS keys in the config, and the outbound proxy rules.
@Suite struct DiscoveryAndProxyTests {
    static let document = """
        {"issuer":"https://idp.example.com/realms/a","token_endpoint":"https://idp.example.com/realms/a/token",
         "token_endpoint_auth_methods_supported":["client_secret_basic","private_key_jwt","tls_client_auth"],
         "mtls_endpoint_aliases":{"token_endpoint":"https://mtls.idp.example.com/realms/a/token"}}
        """

    @Test func wellKnownURLsFollowBothSpecs() {
        #expect(
            DiscoveryDocument.wellKnownURLs(issuer: "https://idp.example.com/realms/a/") == [
                "https://idp.example.com/realms/a/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server/realms/a",
            ]
        )
        #expect(
            DiscoveryDocument.wellKnownURLs(issuer: "https://idp.example.com").last
                == "https://idp.example.com/.well-known/oauth-authorization-server"
        )
    }

    @Test func theTokenEndpointIsPickedForTheAuthMethod() throws {
        let document = try DiscoveryDocument.parse(Array(Self.document.utf8)).get()
        let issuer = "https://idp.example.com/realms/a"
        #expect(try document.tokenEndpoint(issuer: issuer, auth: .privateKeyJWT).get() == "https://idp.example.com/realms/a/token")
        #expect(try document.tokenEndpoint(issuer: issuer, auth: .tlsClientAuth).get() == "https://mtls.idp.example.com/realms/a/token")
        guard case .failure(let message) = document.tokenEndpoint(issuer: issuer, auth: .clientSecretPost) else {
            Issue.record("an unoffered method was accepted")
            return
        }
        #expect(
            message.message.contains("does not offer client_auth \"client_secret_post\"") && message.message.contains("private_key_jwt")
        )
        guard case .failure(let wrongIssuer) = document.tokenEndpoint(issuer: "https://other.example.com", auth: .privateKeyJWT) else {
            Issue.record("another issuer's document was accepted")
            return
        }
        #expect(wrongIssuer.message.contains("names issuer"))
    }

    func load(_ instance: String, discover: @escaping ConfigLoader.Discoverer) -> ConfigLoader.Loaded {
        let input = ConfigLoader.Input(
            settings: nil,
            instances: [("alpha", .success(.init(path: "/c/instances/alpha.toml", text: instance)))]
        )
        return ConfigLoader.load(input, discover: discover) { _ in .success(.init("secret")) }
    }

    @Test func anIssuerInsteadOfATokenURLIsDiscovered() throws {
        let text =
            "issuer = \"https://idp.example.com/realms/a\"\nclient_auth = \"client_secret_basic\"\n[variables]\nclient_id = \"c\"\nclient_secret = { file = \"/s\" }\n"
        let loaded = load(text) { issuer, _, _ in
            issuer == "https://idp.example.com/realms/a"
                ? DiscoveryDocument.parse(Array(Self.document.utf8)) : .failure(DiscoveryError("unknown"))
        }
        #expect(loaded.errors.isEmpty, "\(loaded.errors)")
        #expect(loaded.instances["alpha"]?.request.url == "https://idp.example.com/realms/a/token")

        let refused = load(text.replacingOccurrences(of: "client_secret_basic", with: "client_secret_post")) { _, _, _ in
            DiscoveryDocument.parse(Array(Self.document.utf8))
        }
        let error = try #require(refused.errors.first)
        #expect(error.key == "issuer" && error.line == 1 && error.message.contains("does not offer"))

        let unreachable = load(text) { _, _, _ in .failure(DiscoveryError("GET …: connection refused")) }
        #expect(unreachable.errors.first?.message.contains("discovery failed: GET …: connection refused") == true)
    }

    @Test func tokenURLAndIssuerTogetherAreRefused() {
        let (_, diagnostics) = parseInstance(
            "token_url = \"https://a/t\"\nissuer = \"https://a\"\n[variables]\nclient_id = \"c\"\nclient_secret = \"s\"\n"
        )
        #expect(diagnostics.contains { $0.key == "issuer" && $0.line == 2 && $0.message.contains("not both") })
    }

    @Test func caFileMustBeAbsoluteAndBeReadable() throws {
        let (_, relative) = parseInstance(
            "token_url = \"https://a/t\"\nca_file = \"ca.pem\"\n[variables]\nclient_id = \"c\"\nclient_secret = \"s\"\n"
        )
        #expect(relative.contains { $0.key == "ca_file" && $0.line == 2 })
        let text =
            "token_url = \"https://a/t\"\nca_file = \"/etc/ssl/private-ca.pem\"\n[variables]\nclient_id = \"c\"\nclient_secret = { file = \"/s\" }\n"
        let input = ConfigLoader.Input(settings: nil, instances: [("alpha", .success(.init(path: "/c/instances/alpha.toml", text: text)))])
        let loaded = ConfigLoader.load(input) { source in
            source == .file(path: "/s") ? .success(.init("secret")) : .failure(.init("file /etc/ssl/private-ca.pem does not exist"))
        }
        let error = try #require(loaded.errors.first)
        #expect(error.key == "ca_file" && error.line == 2 && error.file == "/c/instances/alpha.toml")
        let checked = ConfigLoader.load(
            input,
            checkTLS: { $0.trustRootsPEM == "not a pem" ? TLSProblem(key: "ca_file", message: "holds no PEM certificate") : nil },
            readSecret: { _ in .success(.init("not a pem")) }
        )
        #expect(checked.errors.first?.description == "/c/instances/alpha.toml:2: ca_file: holds no PEM certificate")
    }

    @Test func tlsClientAuthNeedsACertificateAndKeyAndSendsTheClientID() throws {
        let (_, missing) = parseInstance("token_url = \"https://a/t\"\nclient_auth = \"tls_client_auth\"\n[variables]\nclient_id = \"c\"\n")
        #expect(Set(missing.compactMap(\.key)) == ["variables.client_certificate", "variables.client_key"])
        let text =
            "token_url = \"https://a/t\"\nclient_auth = \"tls_client_auth\"\n[variables]\nclient_id = \"c\"\nclient_certificate = { file = \"/cert\" }\nclient_key = { file = \"/key\" }\n"
        let input = ConfigLoader.Input(settings: nil, instances: [("alpha", .success(.init(path: "/c/instances/alpha.toml", text: text)))])
        let loaded = ConfigLoader.load(input) { source in
            .success(.init(source == .file(path: "/cert") ? "CERT PEM" : "KEY PEM", warning: "readable by every user"))
        }
        #expect(loaded.diagnostics.map(\.key) == ["variables.client_key"], "a certificate file may be world-readable, a key may not")
        let request = try #require(loaded.instances["alpha"]).request
        #expect(request.tls.clientCertificatePEM == "CERT PEM" && request.tls.clientKeyPEM?.revealed == "KEY PEM")
        #expect(String(decoding: request.body, as: UTF8.self) == "grant_type=client_credentials&client_id=c")
        #expect(!"\(request.tls)".contains("KEY PEM"))
    }

    @Test func proxySettingsComeFromTheConfigThenTheEnvironment() throws {
        let environment = ["HTTPS_PROXY": "http://127.0.0.1:3128", "NO_PROXY": "localhost, .internal.example,10.0.0.1"]
        let fromEnvironment = try #require(ProxySettings.resolve(setting: nil, noProxySetting: nil, environment: environment).proxy)
        #expect(fromEnvironment.host == "127.0.0.1" && fromEnvironment.port == 3128)
        #expect(fromEnvironment.noProxy == ["localhost", ".internal.example", "10.0.0.1"])
        #expect(fromEnvironment.applies(to: "idp.example.com"))
        #expect(!fromEnvironment.applies(to: "auth.internal.example"))
        #expect(!fromEnvironment.applies(to: "internal.example"))
        #expect(!fromEnvironment.applies(to: "localhost"))
        #expect(!fromEnvironment.applies(to: "10.0.0.1"))
        #expect(fromEnvironment.applies(to: "notinternal.example"))
        let fromConfig = try #require(
            ProxySettings.resolve(setting: "http://proxy.local:8080", noProxySetting: ["*"], environment: environment).proxy
        )
        #expect(fromConfig.host == "proxy.local" && !fromConfig.applies(to: "idp.example.com"))
        #expect(ProxySettings.resolve(setting: nil, noProxySetting: nil, environment: [:]).proxy == nil)
        #expect(ProxySettings.parse("http://user:pass@proxy:3128") == nil)

        let (settings, errors) = ConfigParser.parseSettings(file: "/c/tokend.toml", text: "[http]\nproxy = \"socks5://x:1\"\n")
        #expect(settings == nil && errors.first?.key == "http.proxy" && errors.first?.line == 2)
        let good = ConfigParser.parseSettings(
            file: "/c/tokend.toml",
            text: "[http]\nproxy = \"http://127.0.0.1:3128\"\nno_proxy = [\"localhost\"]\n"
        ).settings
        #expect(good?.proxy == "http://127.0.0.1:3128" && good?.noProxy == ["localhost"])
        let notAList = ConfigParser.parseSettings(file: "/c/tokend.toml", text: "[http]\nno_proxy = \"localhost\"\n").diagnostics
        #expect(notAList.first?.key == "http.no_proxy" && notAList.first?.line == 2)
    }

    @Test func resourceAndAudienceAreOrdinaryVariablesOfTheDefaultBody() throws {
        let text =
            "token_url = \"https://a/t\"\n[variables]\nclient_id = \"c\"\nclient_secret = \"s\"\nresource = \"https://api.example.com\"\naudience = \"orders\"\n"
        let definition = try #require(parseInstance(text).0)
        let request = try TokenRequestBuilder.resolve(
            definition,
            values: [
                "client_id": Secret("c"), "client_secret": Secret("s"), "resource": Secret("https://api.example.com"),
                "audience": Secret("orders"),
            ]
        ).get().request
        #expect(
            String(decoding: request.body, as: UTF8.self)
                == "grant_type=client_credentials&resource=https%3A%2F%2Fapi.example.com&audience=orders&client_id=c&client_secret=s"
        )
    }
}
