import Foundation
import Testing
import TokendCore
import TokendTestSupport

/// SPEC §3's request shaping and §13's `[apply]` with the real binary: a GET metadata endpoint, a text/plain endpoint,
/// per-instance response keys, `?format=apply|header` over the socket (fast path and slow path), the CLI forms and
/// `tokend test` with every secret redacted.
@Suite(.serialized, .timeLimit(.minutes(3))) struct RequestShapeEndToEndTests {
    /// A second endpoint of the test, started on a free port and stopped by the teardown.
    func extraEndpoint(_ harness: DaemonHarness, _ behavior: LocalTokenServer.Behavior) async throws -> LocalTokenServer {
        let server = LocalTokenServer()
        harness.adopt(server)
        try await server.start(port: 0)
        server.setBehavior(behavior)
        return server
    }

    @Test func getPlainTextAndInstanceKeysEachGetTheirToken() async throws {
        try await DaemonHarness.with { harness in
            // An Azure IMDS look-alike: GET, query parameters, `Metadata: true`, no body; anything else is a 400.
            let imds = try await extraEndpoint(harness, .issue(lifetime: 3600))
            imds.requireGET(
                query: ["api-version": "2018-02-01", "resource": "https://management.azure.com/"],
                headers: ["Metadata": "true"]
            )
            try harness.writeConnector(
                "imds",
                """
                token_url = "\(imds.baseURL)/metadata/identity/oauth2/token"
                method = "GET"
                [variables.resource]
                default = "https://management.azure.com/"
                [query]
                api-version = "2018-02-01"
                resource = "{{resource}}"
                [headers]
                Metadata = "true"
                """
            )
            try harness.writeRaw("vm", "connector = \"imds\"\n")
            let plain = try await extraEndpoint(harness, .issuePlainText(jwtExpiresIn: 900))
            try harness.writeRaw(
                "plain",
                "token_url = \"\(plain.tokenURL)\"\ntoken_key = \"\"\n[variables]\nclient_id = \"p\"\nclient_secret = \"not-secret-p\"\n"
            )
            let nested = try await extraEndpoint(
                harness,
                .issueAt(tokenPath: "data.jwt", expiresInPath: "data.ttl", tokenTypePath: "data.kind", tokenType: "bearer", lifetime: 1200)
            )
            try harness.writeConnector("nested", "token_url = \"\(nested.tokenURL)\"\n")
            let nestedSecret = try harness.writeSecret("nested", "SECRET-nested-77")
            try harness.writeRaw(
                "nested",
                """
                connector = "nested"
                token_key = "data.jwt"
                expires_in_key = "data.ttl"
                token_type_key = "data.kind"
                [variables]
                client_id = "n"
                client_secret = { file = "\(nestedSecret)" }
                """
            )
            try harness.start()
            try await harness.waitUntilReady()

            let vm = try await harness.get("/v1/tokens/vm")
            #expect(vm.status == 200, "\(vm.body) \(harness.log.suffix(1500))")
            let request = try #require(imds.requests.last)
            #expect(request.method == "GET")
            #expect(request.body.isEmpty)
            #expect(request.queryFields == ["api-version": "2018-02-01", "resource": "https://management.azure.com/"])
            #expect(request.header("metadata") == "true")
            #expect(try await harness.token("vm") == imds.issuedTokens.last)

            let plainToken = try await harness.token("plain")
            #expect(plainToken != nil && plainToken == plain.issuedTokens.last)
            let plainBody = try await harness.get("/v1/tokens/plain").json(API.TokenBody.self)
            // The lifetime came from the JWT's `exp` (900 s), as for a JSON answer without expires_in.
            #expect((880...900).contains(plainBody.expires_in), "\(plainBody.expires_in)")

            let nestedBody = try await harness.get("/v1/tokens/nested").json(API.TokenBody.self)
            #expect(nestedBody.access_token == nested.issuedTokens.last)
            #expect(nestedBody.token_type == "bearer")
            #expect((1180...1200).contains(nestedBody.expires_in), "\(nestedBody.expires_in)")
            #expect(try await harness.get("/v1/tokens/nested?format=header").body == "Bearer \(nestedBody.access_token)")
            #expect(try await harness.stop() == 0)
        }
    }

    static func shopify(_ harness: DaemonHarness) throws {
        try harness.writeConnector(
            "shopify",
            """
            token_url = "\(harness.endpoint.tokenURL)"
            client_auth = "client_secret_basic"
            [variables.url]
            required = true
            [apply]
            header = "X-Shopify-Access-Token"
            value = "{{token}}"
            expose = ["url"]
            """
        )
        let secret = try harness.writeSecret("shop", "SECRET-shop-4455")
        try harness.writeRaw(
            "shop",
            """
            connector = "shopify"
            [variables]
            url = "https://shop.example.com"
            client_id = "shop"
            client_secret = { file = "\(secret)" }
            """
        )
    }

    @Test func applyAndHeaderFormatsAgreeOnTheFastAndTheSlowPath() async throws {
        try await DaemonHarness.with { harness in
            try Self.shopify(harness)
            try harness.writeInstance("plain")
            try harness.start()
            try await harness.waitUntilReady()
            let token = try #require(try await harness.token("shop"))

            let expected = API.ApplyBody(
                instance: "shop",
                headers: ["X-Shopify-Access-Token": token],
                values: ["url": "https://shop.example.com"],
                expires_at: 0,
                expires_in: 0
            )
            func check(_ answer: (status: Int, body: String), _ path: String) throws {
                #expect(answer.status == 200, "\(path): \(answer.body)")
                var body = try JSONDecoder().decode(API.ApplyBody.self, from: Data(answer.body.utf8))
                #expect(body.expires_in > 3500, "\(path)")
                body.expires_at = 0
                body.expires_in = 0
                #expect(body == expected, "\(path)")
            }
            let url = "http://localhost/v1/tokens/shop"
            // HTTP/1.1 with curl's usual headers: the fast path; HTTP/1.0: llhttp and the router.
            try check(try harness.curl([url + "?format=apply"]), "fast path")
            try check(try harness.curl(["--http1.0", url + "?format=apply"]), "slow path")
            // min_valid goes through the router (and, above what is left, the scheduler).
            try check(try harness.curl([url + "?format=apply&min_valid=10"]), "router with min_valid")
            #expect(try harness.curl([url + "?format=header"]).body == token)
            #expect(try harness.curl(["--http1.0", url + "?format=header"]).body == token)
            // Without [apply]: `Authorization: Bearer <token>`.
            let plain = try #require(try await harness.token("plain"))
            let plainApply = try harness.curl(["http://localhost/v1/tokens/plain?format=apply"])
            let plainBody = try JSONDecoder().decode(API.ApplyBody.self, from: Data(plainApply.body.utf8))
            #expect(plainBody.headers == ["Authorization": "Bearer \(plain)"])
            #expect(plainBody.values.isEmpty)

            // Two requests on one kept-alive connection, both answered from the fast path's shared answers.
            let raw = try harness.rawExchange(
                "GET /v1/tokens/shop?format=apply HTTP/1.1\r\nHost: localhost\r\n\r\n"
                    + "GET /v1/tokens/shop?format=header HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            let answers = raw.components(separatedBy: "HTTP/1.1 200 OK").dropFirst()
            #expect(answers.count == 2, "\(raw)")
            #expect(answers.first?.contains(#""X-Shopify-Access-Token":"\#(token)""#) == true, "\(raw)")
            #expect(answers.last?.hasSuffix("\r\n\r\n\(token)") == true, "\(raw)")

            // The CLI forms.
            let socket = ["--socket", harness.socketPath]
            let apply = try harness.runCLI(["token", "shop", "--format", "apply"] + socket)
            #expect(apply.status == 0, "\(apply.stderr)")
            try check((200, apply.stdout), "tokend token --format apply")
            let curlHeader = try harness.runCLI(["token", "shop", "--curl-header"] + socket)
            #expect(curlHeader.status == 0, "\(curlHeader.stderr)")
            #expect(curlHeader.stdout == "X-Shopify-Access-Token: \(token)\n")
            let plainHeader = try harness.runCLI(["token", "plain", "--curl-header"] + socket)
            #expect(plainHeader.stdout == "Authorization: Bearer \(plain)\n")
            #expect(try harness.runCLI(["token", "shop", "--format", "header"] + socket).stdout == "\(token)\n")
            #expect(try await harness.stop() == 0)
        }
    }

    @Test func tokendTestShowsOneRealRequestWithEverySecretRedacted() async throws {
        try await DaemonHarness.with { harness in
            try Self.shopify(harness)
            harness.audit(secret: "SECRET-shop-4455")
            try harness.writeInstance("posted", secret: "SECRET posted+&=%/é", auth: "client_secret_post")
            harness.audit(secret: "SECRET posted+&=%/é")
            let apiKey = try harness.writeSecret("api-key", "SECRET-api-key-in-header")
            harness.audit(secret: "SECRET-api-key-in-header")
            try harness.writeInstance("keyed", secret: "SECRET-keyed-basic", extra: "[headers]\nX-Api-Key = \"{{api_key}}\"\n")
            harness.audit(secret: "SECRET-keyed-basic")
            let keyedText = try String(contentsOfFile: harness.configDir + "/instances/keyed.toml", encoding: .utf8)
                .replacingOccurrences(of: "[variables]\n", with: "[variables]\napi_key = { file = \"\(apiKey)\" }\n")
            try harness.writeRaw("keyed", keyedText)
            let pki = try TestPKI.make()
            harness.onTearDown { pki.remove() }
            try harness.writeInstance("signed", auth: "private_key_jwt", extra: "")
            let signedText = try String(contentsOfFile: harness.configDir + "/instances/signed.toml", encoding: .utf8)
                .replacingOccurrences(of: "[variables]\n", with: "[variables]\nprivate_key = { file = \"\(pki.rsaKey)\" }\n")
            try harness.writeRaw("signed", signedText)

            var artifacts: [(what: String, text: String)] = []
            let before = harness.endpoint.requestCount
            for name in ["shop", "posted", "keyed", "signed"] {
                let result = try harness.runCLI(["test", name, "--config-dir", harness.configDir])
                #expect(result.status == 0, "\(name): \(result.stdout) \(result.stderr)")
                artifacts.append(("tokend test \(name)", result.stdout + result.stderr))
                let token = try #require(harness.endpoint.issuedTokens.last)
                #expect(result.stdout.contains("<token:\(TokenFingerprint.of(Secret(token)))>"), "\(result.stdout)")
            }
            // One real request each, no daemon, nothing cached.
            #expect(harness.endpoint.requestCount == before + 4)
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: harness.stateDir)) ?? []).isEmpty)
            let shop = artifacts[0].text
            #expect(shop.contains("POST \(harness.endpoint.tokenURL)"), "\(shop)")
            #expect(shop.contains("Authorization: Basic <secret:client_secret>"), "\(shop)")
            #expect(shop.contains("would serve: X-Shopify-Access-Token: <token:"), "\(shop)")
            #expect(shop.contains("exposes: url = https://shop.example.com"), "\(shop)")
            #expect(shop.contains("HTTP 200"), "\(shop)")
            #expect(artifacts[1].text.contains("client_secret=<secret:client_secret>"), "\(artifacts[1].text)")
            #expect(artifacts[2].text.contains("X-Api-Key: <secret:api_key>"), "\(artifacts[2].text)")
            #expect(artifacts[3].text.contains("client_assertion=<secret:client_assertion>"), "\(artifacts[3].text)")
            // The assertion and the Basic credentials the endpoint received are secrets too.
            for request in harness.endpoint.requests {
                if let authorization = request.header("authorization") { harness.audit(secret: authorization) }
                if let assertion = request.formFields["client_assertion"] { harness.audit(secret: assertion) }
            }

            // A refused request: non-zero, with the reason, and still nothing leaked.
            harness.endpoint.setBehavior(.respond(status: 401, headers: [], body: #"{"error":"invalid_client"}"#))
            let refused = try harness.runCLI(["test", "posted", "--config-dir", harness.configDir])
            #expect(refused.status == 1)
            #expect(refused.stderr.contains("no usable token: invalid_client"), "\(refused.stderr)")
            artifacts.append(("tokend test (refused)", refused.stdout + refused.stderr))

            let leaks = harness.leaks(in: artifacts)
            #expect(leaks.isEmpty, "\(leaks.joined(separator: "\n"))")
        }
    }
}

/// The recipes in `examples/recipes/` pass `tokend check`, as `make check-examples` runs it.
@Suite(.timeLimit(.minutes(1))) struct RecipeExamplesEndToEndTests {
    static let recipes = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("examples/recipes").path

    @Test(arguments: ["azure-imds", "shopify", "token-exchange", "workload-identity"]) func recipePassesCheck(recipe: String) throws {
        let directory = Self.recipes + "/" + recipe
        let result = try runCommand([
            "/usr/bin/env", "CREDENTIALS_DIRECTORY=\(directory)/credentials", try DaemonHarness.binaryPath(), "check", "--config-dir",
            directory,
        ])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains(" valid, 0 error(s), 0 warning(s)"), "\(result.stdout)\(result.stderr)")
    }
}
