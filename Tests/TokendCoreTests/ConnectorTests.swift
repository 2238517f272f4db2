import Foundation
import Testing

@testable import TokendCore

/// Connectors, variables and templating, through the same loader `run`, a reload and `check` use.
@Suite struct ConnectorTests {
    static let acme = """
        description   = "Acme Commerce API"
        token_url     = "{{url}}/oauth/{{tenant}}/token"
        content_type  = "application/x-www-form-urlencoded"
        client_auth   = "client_secret_post"
        token_key     = "data.token"
        expires_in_key = "data.ttl"

        [variables.url]
        required = true
        description = "Base URL of the shop"

        [variables.tenant]
        default = "main"

        [variables.scope]
        default = ""

        [query]
        api-version = "2"
        shop = "{{tenant}}"

        [headers]
        Accept = "application/json"
        X-Tenant = "{{tenant}}"

        [body]
        grant_type    = "{{grant_type}}"
        client_id     = "{{client_id}}"
        client_secret = "{{client_secret}}"
        scope         = "{{scope}}"
        """

    static func instance(_ variables: String, connector: String = "acme") -> String {
        "connector = \"\(connector)\"\n\n[variables]\n" + variables
    }

    func load(
        connectors: [String: String] = ["acme": ConnectorTests.acme],
        instances: [String: String],
        secrets: [String: String] = [:]
    ) -> ConfigLoader.Loaded {
        let input = ConfigLoader.Input(
            settings: nil,
            connectors: connectors.sorted { $0.key < $1.key }.map {
                ($0.key, .success(.init(path: "/c/connectors/\($0.key).toml", text: $0.value)))
            },
            instances: instances.sorted { $0.key < $1.key }.map {
                ($0.key, .success(.init(path: "/c/instances/\($0.key).toml", text: $0.value)))
            }
        )
        return ConfigLoader.load(input) { source in
            guard case .file(let path) = source, let secret = secrets[path] else { return .failure(.init("file \(source) does not exist")) }
            return .success(.init(secret))
        }
    }

    @Test func threeInstancesOfOneConnectorDifferOnlyInVariables() throws {
        let loaded = load(
            instances: [
                "shop-a": Self.instance("url = \"https://a.example.com\"\nclient_id = \"a\"\nclient_secret = { file = \"/s/a\" }\n"),
                "shop-b": Self.instance(
                    "url = \"https://b.example.com\"\ntenant = \"b&b/2\"\nclient_id = \"b\"\nclient_secret = { file = \"/s/b\" }\nscope = \"orders:read products:read\"\n"
                ),
                "shop-c": Self.instance("url = \"http://127.0.0.1:8080\"\nclient_id = \"c\"\nclient_secret = { file = \"/s/c\" }\n"),
            ],
            secrets: ["/s/a": "sa", "/s/b": "s+b=", "/s/c": "sc"]
        )
        #expect(loaded.errors.isEmpty, "\(loaded.errors)")
        let a = try #require(loaded.instances["shop-a"]).request
        #expect(a.url == "https://a.example.com/oauth/main/token?api-version=2&shop=main")
        #expect(String(decoding: a.body, as: UTF8.self) == "grant_type=client_credentials&client_id=a&client_secret=sa")
        #expect(
            a.headers == [
                .init("Content-Type", "application/x-www-form-urlencoded"), .init("Accept", "application/json"), .init("X-Tenant", "main"),
            ]
        )
        let b = try #require(loaded.instances["shop-b"]).request
        // The tenant lands in a path segment (escaped as one), in the query (form-encoded) and in a header (as is).
        #expect(b.url == "https://b.example.com/oauth/b&b%2F2/token?api-version=2&shop=b%26b%2F2")
        #expect(b.headers.last == .init("X-Tenant", "b&b/2"))
        #expect(
            String(decoding: b.body, as: UTF8.self)
                == "grant_type=client_credentials&client_id=b&client_secret=s%2Bb%3D&scope=orders%3Aread%20products%3Aread"
        )
        let c = try #require(loaded.instances["shop-c"])
        #expect(c.request.url == "http://127.0.0.1:8080/oauth/main/token?api-version=2&shop=main")
        #expect(Set([loaded.instances["shop-a"]!.fingerprint, loaded.instances["shop-b"]!.fingerprint, c.fingerprint]).count == 3)
        #expect(c.definition.connector.tokenKey == "data.token")
    }

    @Test func describeShowsTheRequestWithSecretsRedacted() throws {
        let loaded = load(
            instances: ["shop": Self.instance("url = \"https://a.example.com\"\nclient_id = \"a\"\nclient_secret = { file = \"/s/a\" }\n")],
            secrets: ["/s/a": "topsecret"]
        )
        let shown = TokenRequestBuilder.describe(try #require(loaded.instances["shop"]))
        #expect(
            shown == """
                POST https://a.example.com/oauth/main/token?api-version=2&shop=main
                Content-Type: application/x-www-form-urlencoded
                Accept: application/json
                X-Tenant: main

                grant_type=client_credentials&client_id=a&client_secret=<redacted>
                """
        )
    }

    @Test func jsonBodyWithCustomFieldsAndNoneAuth() throws {
        let connector = """
            token_url = "https://idp.example.com/token"
            content_type = "application/json"
            client_auth = "none"
            [variables.audience]
            required = true
            [variables.api_key]
            required = true
            secret = true
            [headers]
            X-Api-Key = "{{api_key}}"
            [body]
            clientId = "{{client_id}}"
            audience = "{{audience}}"
            grant_type = "client_credentials"
            """
        let loaded = load(
            connectors: ["json": connector],
            instances: [
                "j": Self.instance(
                    "client_id = \"id \\\"q\\\"\"\naudience = \"https://api\"\napi_key = { credential = \"k\" }\n",
                    connector: "json"
                )
            ],
            secrets: [:]
        )
        // The credential is missing: the error names the instance file and the variable's line.
        #expect(
            loaded.errors.map(\.description) == ["/c/instances/j.toml:6: variables.api_key: file credential(name: \"k\") does not exist"]
        )
        let withKey = ConfigLoader.load(
            .init(
                settings: nil,
                connectors: [("json", .success(.init(path: "/c/connectors/json.toml", text: connector)))],
                instances: [
                    (
                        "j",
                        .success(
                            .init(
                                path: "/c/instances/j.toml",
                                text: Self.instance(
                                    "client_id = \"id \\\"q\\\"\"\naudience = \"https://api\"\napi_key = { credential = \"k\" }\n",
                                    connector: "json"
                                )
                            )
                        )
                    )
                ]
            )
        ) { _ in .success(.init("key-123")) }
        let request = try #require(withKey.instances["j"]).request
        let object = try JSONDecoder().decode([String: String].self, from: Data(request.body))
        #expect(object == ["clientId": "id \"q\"", "audience": "https://api", "grant_type": "client_credentials"])
        #expect(request.headers.contains(.init("X-Api-Key", "key-123")))
        #expect(request.headers.contains(.init("Content-Type", "application/json")))
        #expect(!request.headers.contains { $0.name == "Authorization" })
        #expect(withKey.instances["j"]!.definition.secretVariables.contains("api_key"))
    }

    @Test func headerInjectionThroughAVariableIsRefused() {
        let connector =
            "token_url = \"https://idp.example.com/token\"\n[variables.team]\nrequired = true\n[headers]\nX-Team = \"{{team}}\"\n"
        let loaded = load(
            connectors: ["c": connector],
            instances: [
                "i": Self.instance("client_id = \"a\"\nclient_secret = { file = \"/s\" }\nteam = \"x\\r\\nEvil: 1\"\n", connector: "c")
            ],
            secrets: ["/s": "s"]
        )
        #expect(loaded.instances.isEmpty)
        #expect(loaded.failedInstances == ["i"])
        #expect(
            loaded.errors.map(\.description) == [
                "/c/instances/i.toml:6: headers.X-Team: the rendered value contains a line break (header injection refused)"
            ]
        )
    }

    /// Each validation error, with the file and line it must name.
    @Test(arguments: [
        (
            "connector = \"acmee\"\n[variables]\nclient_id = \"a\"\n",
            "/c/instances/i.toml:1: connector: no connector named 'acmee' (expected connectors/acmee.toml)"
        ),
        (
            "connector = \"acme\"\n[variables]\nurl = \"https://x\"\nclient_id = \"a\"\nclient_secret = { file = \"/s\" }\ntenat = \"t\"\n",
            "/c/instances/i.toml:6: variables.tenat: connector 'acme' has no variable 'tenat' (did you mean 'tenant'?)"
        ),
        (
            "connector = \"acme\"\n[variables]\nclient_id = \"a\"\nclient_secret = { file = \"/s\" }\n",
            "/c/instances/i.toml:2: variables.url: missing required variable (connector 'acme' requires it)"
        ),
        (
            "connector = \"acme\"\n[variables]\nurl = \"http://shop.example.com\"\nclient_id = \"a\"\nclient_secret = { file = \"/s\" }\n",
            "/c/instances/i.toml:3: token_url: http:// is allowed only to a loopback host; use https or set allow_insecure_http = true (rendered as http://shop.example.com/oauth/main/token)"
        ),
        (
            "connector = \"acme\"\n[variables]\nurl = \"https://x\"\nclient_id = \"a\"\nclient_secret = { file = \"/s\" }\n[refresh]\nmin_lead = \"1 minute\"\n",
            "/c/instances/i.toml:7: refresh.min_lead: expected a duration such as \"30s\", \"5m\" or \"1h\", found \"1 minute\""
        ),
        (
            "token_url = \"https://x/t\"\ncontent_type = \"text/plain\"\n[variables]\nclient_id = \"a\"\nclient_secret = { file = \"/s\" }\n",
            "/c/instances/i.toml:2: content_type: expected one of \"application/x-www-form-urlencoded\", \"application/json\", found \"text/plain\""
        ),
        (
            "token_url = \"https://x/{{tenant}}/t\"\n[variables]\nclient_id = \"a\"\nclient_secret = { file = \"/s\" }\n",
            "/c/instances/i.toml:1: token_url: {{tenant}} names no variable"
        ),
        (
            "token_url = \"ftp://x/t\"\n[variables]\nclient_id = \"a\"\nclient_secret = { file = \"/s\" }\n",
            "/c/instances/i.toml:1: token_url: expected an https:// URL, found scheme 'ftp' (rendered as ftp://x/t)"
        ),
        (
            "token_url = \"https://x/t\"\n[headers]\nAccept = \"a\"\naccept = \"b\"\n[variables]\nclient_id = \"a\"\nclient_secret = { file = \"/s\" }\n",
            "/c/instances/i.toml:2: headers: header 'accept' is given twice (header names are case-insensitive)"
        ),
    ])
    func validationErrorsNameFileLineAndKey(_ text: String, _ expected: String) {
        let loaded = load(instances: ["i": text], secrets: ["/s": "s"])
        #expect(loaded.instances.isEmpty)
        #expect(loaded.errors.map(\.description) == [expected])
    }

    @Test func connectorFileErrorsAndTheirInstances() {
        let broken = "token_url = \"https://x/{{tenantt}}\"\n[variables.tenant]\ndefault = \"a\"\nrequired = true\n"
        let loaded = load(
            connectors: ["broken": broken],
            instances: ["i": Self.instance("client_id = \"a\"\n", connector: "broken")]
        )
        #expect(
            loaded.errors.map(\.description) == [
                "/c/connectors/broken.toml:4: variables.tenant.required: a variable with a default cannot be required",
                "/c/connectors/broken.toml:1: token_url: {{tenantt}} names no variable (did you mean 'tenant'?)",
                "/c/instances/i.toml:1: connector: connector 'broken' has errors (see its file); this instance waits for it",
            ]
        )
        #expect(loaded.failedInstances == ["i"])
    }

    @Test func urlTemplateEscapesByPosition() {
        let values = ["base": "https://h.example.com/api", "seg": "a b/c", "q": "x&y=z"]
        let rendered = TokenRequestBuilder.renderURL("{{base}}/{{seg}}/token?x={{q}}") { values[$0] }
        #expect(rendered == "https://h.example.com/api/a%20b%2Fc/token?x=x%26y%3Dz")
    }
}
