import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Connectors with the real binary: one connector, three instances, `check` and reload agreeing on errors.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ConnectorEndToEndTests {
    static func connector(port: Int) -> String {
        """
        description = "Local shop API"
        token_url   = "{{url}}/t/{{tenant}}/token"
        client_auth = "client_secret_basic"
        token_key   = "access_token"

        [variables.url]
        default = "http://127.0.0.1:\(port)"

        [variables.tenant]
        required = true

        [query]
        api-version = "2"

        [headers]
        X-Tenant = "{{tenant}}"
        """
    }

    func writeShop(_ harness: DaemonHarness, _ name: String, tenant: String, scope: String) throws {
        let secret = try harness.writeSecret(name, "secret of \(name)\n")
        try harness.writeRaw(
            name,
            """
            connector = "shop"

            [variables]
            tenant        = "\(tenant)"
            client_id     = "\(name)"
            client_secret = { file = "\(secret)" }
            scope         = "\(scope)"
            """
        )
    }

    @Test func oneConnectorThreeInstances() async throws {
        try await DaemonHarness.with { harness in
            for name in ["shop-a", "shop-b", "shop-c"] {
                harness.endpoint.expectClient(id: name, secret: "secret of \(name)")
            }
            try harness.writeConnector("shop", Self.connector(port: harness.endpoint.port))
            try writeShop(harness, "shop-a", tenant: "alpha", scope: "orders:read")
            try writeShop(harness, "shop-b", tenant: "beta", scope: "")
            try writeShop(harness, "shop-c", tenant: "gamma delta", scope: "products:read")
            try harness.start()
            try await harness.waitUntilReady()

            var tokens: Set<String> = []
            for name in ["shop-a", "shop-b", "shop-c"] {
                tokens.insert(try #require(try await harness.token(name), "no token for \(name)"))
            }
            #expect(tokens.count == 3)
            let requests = harness.endpoint.requests.sorted { $0.uri < $1.uri }
            #expect(
                requests.map(\.uri) == [
                    "/t/alpha/token?api-version=2", "/t/beta/token?api-version=2", "/t/gamma%20delta/token?api-version=2",
                ]
            )
            #expect(requests.map { $0.header("x-tenant") } == ["alpha", "beta", "gamma delta"])
            #expect(
                requests.map(\.bodyText) == [
                    "grant_type=client_credentials&scope=orders%3Aread",
                    "grant_type=client_credentials",
                    "grant_type=client_credentials&scope=products%3Aread",
                ]
            )
            #expect(try await harness.stop() == 0)
        }
    }

    @Test func checkAndReloadReportTheSameErrorsWhileInstancesKeepServing() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeConnector("shop", Self.connector(port: harness.endpoint.port))
            try writeShop(harness, "shop-a", tenant: "alpha", scope: "")
            try writeShop(harness, "shop-b", tenant: "beta", scope: "")
            try harness.start()
            try await harness.waitUntilReady()
            let a = try await harness.token("shop-a")
            let b = try await harness.token("shop-b")
            let clean = try harness.runCLI(["check", "--config-dir", harness.configDir])
            #expect(clean.status == 0, "\(clean.stderr)")
            #expect(clean.stdout.contains("2 instance(s) valid, 0 error(s)"))

            // Break shop-b (a typo), add a broken instance and one that names a missing connector.
            try harness.writeRaw(
                "shop-b",
                "connector = \"shop\"\n[variables]\ntenant = \"beta\"\nclient_id = \"shop-b\"\nclient_secert = \"x\"\n"
            )
            try harness.writeRaw("shop-x", "connector = \"nope\"\n[variables]\nclient_id = \"x\"\n")
            try harness.writeRaw(
                "shop-y",
                "token_url = \"http://example.com/token\"\n[variables]\nclient_id = \"y\"\nclient_secret = \"y\"\n"
            )

            let check = try harness.runCLI(["check", "--config-dir", harness.configDir])
            #expect(check.status == 1)
            let checkErrors = check.stderr.split(separator: "\n").map(String.init).filter { !$0.contains(": warning: ") }
            #expect(checkErrors.count == 4, "\(check.stderr)")
            #expect(
                checkErrors.contains(
                    "\(harness.configDir)/instances/shop-b.toml:5: variables.client_secert: connector 'shop' has no variable 'client_secert' (did you mean 'client_secret'?)"
                )
            )

            harness.signal(SIGHUP)
            try await harness.waitUntilReady(count: 2)
            #expect(harness.loggedConfigErrors == checkErrors)
            // The broken file's instance keeps its last good definition and token; the others are untouched.
            #expect(try await harness.token("shop-a") == a)
            #expect(try await harness.token("shop-b") == b)
            #expect(try await harness.get("/v1/tokens/shop-x").status == 404)
            #expect(harness.notify.assignments.last { $0.hasPrefix("STATUS=") }?.contains("4 config errors") == true)
            #expect(try await harness.stop() == 0)
        }
    }

    @Test func checkShowPrintsTheRenderedRequestWithoutSecrets() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeConnector("shop", Self.connector(port: 8080))
            try writeShop(harness, "shop-a", tenant: "alpha", scope: "read")
            let result = try harness.runCLI(["check", "--config-dir", harness.configDir, "--show", "shop-a"])
            #expect(result.status == 0)
            #expect(
                result.stdout == """
                    \(harness.configDir): 1 instance(s) valid, 0 error(s), 0 warning(s)

                    POST http://127.0.0.1:8080/t/alpha/token?api-version=2
                    Content-Type: application/x-www-form-urlencoded
                    Accept: application/json
                    Authorization: Basic <redacted> (client_id and client_secret, base64)
                    X-Tenant: alpha

                    grant_type=client_credentials&scope=read

                    """
            )
            #expect(!result.stdout.contains("secret of shop-a"))
        }
    }

    @Test func worldReadableSecretFileIsAWarningAndInlineSecretsToo() async throws {
        try await DaemonHarness.with { harness in
            let open = try harness.writeSecret("open", "s\n", mode: 0o644)
            try harness.writeRaw(
                "a",
                "token_url = \"http://127.0.0.1:1/t\"\n[variables]\nclient_id = \"a\"\nclient_secret = { file = \"\(open)\" }\n"
            )
            try harness.writeRaw("b", "token_url = \"http://127.0.0.1:1/t\"\n[variables]\nclient_id = \"b\"\nclient_secret = \"inline\"\n")
            let result = try harness.runCLI(["check", "--config-dir", harness.configDir])
            #expect(result.status == 0)
            #expect(
                result.stderr == """
                    \(harness.configDir)/instances/a.toml:4: warning: variables.client_secret: secret file \(open) is readable by every user (mode 0644); chmod 600 it
                    \(harness.configDir)/instances/b.toml:4: warning: variables.client_secret: secret written inline; prefer { file = "…" } or { credential = "…" }

                    """
            )
            #expect(!result.stderr.contains("inline\""))
        }
    }
}
