import Foundation
import Testing

@testable import TokendCore

/// SPEC §13: `[apply]`, how programs use a token on API requests, its config rules and the answers it shapes.
@Suite struct ApplyTests {
    static let shopify = """
        token_url = "{{url}}/admin/oauth/access_token"

        [variables.url]
        required = true

        [variables.shop]
        default = "main"

        [apply]
        header = "X-Shopify-Access-Token"
        value  = "{{token}}"
        expose = ["url", "shop"]
        """

    static let instance =
        "connector = \"shopify\"\n[variables]\nurl = \"https://shop.example.com\"\nclient_id = \"a\"\nclient_secret = \"s3cr3t-value\"\n"

    func load(_ connector: String, instance: String = ApplyTests.instance) -> ConfigLoader.Loaded {
        ConfigLoader.load(
            ConfigLoader.Input(
                settings: nil,
                connectors: [("shopify", .success(.init(path: "/c/connectors/shopify.toml", text: connector)))],
                instances: [("shop", .success(.init(path: "/c/instances/shop.toml", text: instance)))]
            )
        ) { _ in .failure(.init("no files")) }
    }

    func issued(_ value: String = "tok-1", type: String = "bearer") -> IssuedToken {
        IssuedToken(accessToken: Secret(value), tokenType: type, scope: nil, obtainedAt: epoch, expiresAt: epoch.addingTimeInterval(600))
    }

    @Test func theDefaultIsAnAuthorizationHeaderWithBearerCapitalised() {
        let application = TokenApplication.standard
        #expect(application.header == "Authorization")
        for type in ["bearer", "BEARER", "Bearer"] {
            #expect(application.headerValue(for: issued(type: type)) == "Bearer tok-1")
        }
        #expect(application.headerValue(for: issued(type: "DPoP")) == "DPoP tok-1")
        #expect(application.values.isEmpty)
    }

    @Test func aConnectorsApplyNamesTheHeaderAndExposesValues() throws {
        let loaded = load(Self.shopify)
        #expect(loaded.errors.isEmpty, "\(loaded.errors)")
        let application = try #require(loaded.instances["shop"]).application
        #expect(application.header == "X-Shopify-Access-Token")
        #expect(application.headerValue(for: issued()) == "tok-1")
        #expect(application.values == ["url": "https://shop.example.com", "shop": "main"])
    }

    @Test func theValueMayUseNonSecretVariables() throws {
        let connector = Self.shopify.replacingOccurrences(
            of: "value  = \"{{token}}\"",
            with: "value  = \"{{shop}}:{{token_type}}:{{token}}\""
        )
        let application = try #require(load(connector).instances["shop"]).application
        #expect(application.headerValue(for: issued(type: "bearer")) == "main:Bearer:tok-1")
    }

    @Test func aSecretInExposeIsAnErrorWithItsLine() {
        let loaded = load(Self.shopify.replacingOccurrences(of: "[\"url\", \"shop\"]", with: "[\"url\", \"client_secret\"]"))
        let error = loaded.errors.first
        #expect(error?.file == "/c/connectors/shopify.toml")
        #expect(error?.key == "apply.expose")
        #expect(error?.line == 12)
        #expect(error?.message.contains("'client_secret' is a secret variable") == true)
    }

    @Test func aSecretInTheValueIsAnErrorWithItsLine() {
        let loaded = load(Self.shopify.replacingOccurrences(of: "value  = \"{{token}}\"", with: "value  = \"{{client_secret}} {{token}}\""))
        let error = loaded.errors.first
        #expect(error?.key == "apply.value")
        #expect(error?.line == 11)
        #expect(error?.message.contains("secret variable 'client_secret'") == true)
    }

    @Test func aVariableAnInstanceReadsFromAFileCannotBeExposed() {
        let instance = Self.instance.replacingOccurrences(of: "url = \"https://shop.example.com\"", with: "url = { file = \"/s/url\" }")
        let loaded = load(Self.shopify, instance: instance)
        let error = loaded.errors.first { $0.file == "/c/instances/shop.toml" }
        #expect(error?.key == "variables.url")
        #expect(error?.line == 3)
    }

    @Test func otherApplyMistakesAreErrors() {
        let cases: [(String, String, String)] = [
            ("header = \"X-Shopify-Access-Token\"", "header = \"Bad Header\"", "apply.header"),
            ("value  = \"{{token}}\"", "value  = \"{{token_type}}\"", "apply.value"),
            ("value  = \"{{token}}\"", "value  = \"{{tokne}}{{token}}\"", "apply.value"),
            ("[\"url\", \"shop\"]", "[\"nope\"]", "apply.expose"),
            ("[\"url\", \"shop\"]", "\"url\"", "apply.expose"),
            ("expose = [", "exposed = [", "apply.exposed"),
        ]
        for (old, new, key) in cases {
            let loaded = load(Self.shopify.replacingOccurrences(of: old, with: new))
            #expect(loaded.errors.filter { $0.file.hasSuffix("shopify.toml") }.map(\.key) == [key], "\(new)")
        }
    }

    @Test func anInlineConnectorMayApplyToo() throws {
        let inline = """
            token_url = "https://a.example.com/t"
            [variables]
            client_id = "a"
            client_secret = "s"
            url = "https://api.example.com"
            [apply]
            expose = ["url"]
            """
        let parsed = ConfigParser.parseInstance(name: "i", file: "/c/instances/i.toml", text: inline)
        let definition = try #require(parsed.definition)
        #expect(definition.connector.apply == ApplySpec(expose: ["url"]))
        let secret = ConfigParser.parseInstance(
            name: "i",
            file: "/c/instances/i.toml",
            text: inline.replacingOccurrences(of: "[\"url\"]", with: "[\"client_secret\"]")
        )
        #expect(secret.definition == nil)
        #expect(secret.diagnostics.contains { $0.key == "apply.expose" && $0.line == 7 })
    }

    // MARK: - answers

    @Test func theRouterAnswersHeaderAndApplyFromTheApplication() throws {
        let application = try #require(load(Self.shopify).instances["shop"]).application
        let router = APIRouter()
        let now = epoch.addingTimeInterval(100)
        let header = router.tokenResponse(name: "shop", token: issued(), format: .header, now: now, application: application)
        #expect(String(decoding: header.body, as: UTF8.self) == "tok-1")
        let apply = router.tokenResponse(name: "shop", token: issued(), format: .apply, now: now, application: application)
        #expect(apply.contentType == "application/json")
        let body = try JSONDecoder().decode(API.ApplyBody.self, from: Data(apply.body))
        #expect(
            body
                == API.ApplyBody(
                    instance: "shop",
                    headers: ["X-Shopify-Access-Token": "tok-1"],
                    values: ["shop": "main", "url": "https://shop.example.com"],
                    expires_at: Int(epoch.timeIntervalSince1970) + 600,
                    expires_in: 500
                )
        )
        let standard = router.tokenResponse(name: "shop", token: issued(), format: .header, now: now)
        #expect(String(decoding: standard.body, as: UTF8.self) == "Bearer tok-1")
    }

    @Test func sharedAnswersFollowTheApplication() throws {
        let application = try #require(load(Self.shopify).instances["shop"]).application
        var answers = TokenAnswers()
        let router = APIRouter()
        let plain = answers.answer(name: "shop", token: issued(), format: .header, now: epoch, router: router)
        let applied = answers.answer(name: "shop", token: issued(), format: .header, now: epoch, router: router, application: application)
        #expect(String(decoding: plain.body, as: UTF8.self) == "Bearer tok-1")
        #expect(String(decoding: applied.body, as: UTF8.self) == "tok-1")
    }

    @Test func formatApplyIsParsed() throws {
        let request = APIRequest(method: "GET", target: "/v1/tokens/shop?format=apply")
        #expect(try TokenQuery.parse(request).get().format == .apply)
    }
}
