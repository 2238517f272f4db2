import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The secrets audit: a daemon with distinctive secrets of every kind (file, credential, inline, a private key, an API
/// key in a header, secrets that need encoding) is run through its paces: refreshes, providers that echo the request
/// back in their errors, broken config files holding secrets, a reload, every read-only endpoint and CLI command, a
/// stop.
///
/// Then every artifact (log, status output, metrics, health, error answers, `tokend check` output, the state directory)
/// is searched for every secret and every issued token. Tokens may appear only as fingerprints, and only the cache
/// files may hold them whole. (Every other end-to-end test that stops its daemon runs the same audit over its log and
/// state directory: see `DaemonHarness.stop`.)
@Suite(.serialized, .timeLimit(.minutes(3))) struct SecretsAuditEndToEndTests {
    static let privateKey = """
        -----BEGIN PRIVATE KEY-----
        MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7SECRETkeyLINE1
        q0vZ2hNVZ0Xl7m3pSECRETkeyLINE2xT1cC5d0j8oZkQvE6rU2bB8s3nHf0aQ9wYp
        -----END PRIVATE KEY-----
        """

    @Test func noArtifactHoldsASecretOrAWholeToken() async throws {
        try await DaemonHarness.with(lifetime: 4) { harness in
            try await Self.audit(harness)
        }
    }

    /// The audit can fail: a secret (in its form-encoded spelling) and a token (at the end of a sentence) planted in
    /// the log, and a secret in a state file, are all found.
    ///
    /// An audit that passes therefore means something.
    @Test func theAuditFindsWhatIsPlanted() async throws {
        try await DaemonHarness.with { harness in
            _ = try harness.writeSecret("planted", "planted secret/value")
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            let token = try #require(try await harness.token("alpha"))
            #expect(try await harness.stop() == 0)
            #expect(harness.leaks().isEmpty, "\(harness.leaks())")

            let log = harness.log
            try (log + "a careless line: planted%20secret%2Fvalue, and the token \(token).\n").write(
                toFile: harness.logPath,
                atomically: true,
                encoding: .utf8
            )
            let stray = harness.stateDir + "/stray.json"
            try #"{"note":"planted secret/value"}"#.write(toFile: stray, atomically: true, encoding: .utf8)
            let leaks = harness.leaks()
            #expect(leaks.contains("the daemon log holds the secret pla…"), "\(leaks)")
            #expect(leaks.contains("the daemon log holds the token \(WireDecoding.fingerprint(token))"), "\(leaks)")
            #expect(leaks.contains("\(stray) holds the secret pla…"), "\(leaks)")
            // Planted by the test, not leaked by the daemon: gone before the teardown audits again.
            try log.write(toFile: harness.logPath, atomically: true, encoding: .utf8)
            try FileManager.default.removeItem(atPath: stray)
        }
    }

    static func audit(_ harness: DaemonHarness) async throws {
        let echo = LocalTokenServer()
        harness.adopt(echo)
        try await echo.start(port: 0)
        let echoPlain = LocalTokenServer()
        harness.adopt(echoPlain)
        try await echoPlain.start(port: 0)

        // Secrets of every kind, each distinctive.
        try harness.writeInstance("basic", secret: "SECRET-basic-Zq8x!:@")
        try harness.writeInstance("post", secret: "SECRET post+&=%/é", auth: "client_secret_post")
        // Providers that echo the request: the secret straddles the 200th character, where messages are clipped.
        let echoSecret = "SECRET-echoed-77abcdefgh"
        let echoPrefix = "grant_type=client_credentials&scope=read&client_id=echo&client_secret="
        echo.setBehavior(.echoRequest(status: 400, oauth: true, padding: 188 - echoPrefix.count))
        try harness.writeInstance("echo", secret: echoSecret, auth: "client_secret_post", tokenURL: echo.tokenURL)
        let plainPrefix = "grant_type=client_credentials&scope=read&client_id=echo-plain&client_secret="
        echoPlain.setBehavior(.echoRequest(status: 500, oauth: false, padding: 188 - plainPrefix.count))
        try harness.writeInstance(
            "echo-plain",
            secret: "SECRET-plain-echo-9876543",
            auth: "client_secret_post",
            tokenURL: echoPlain.tokenURL
        )
        // Basic credentials echoed back (they are the secret, base64-encoded).
        try harness.writeInstance("echo-basic", secret: "SECRET-echo-basic-5f4e3d2c", tokenURL: echo.tokenURL)
        // A private key and an API key (from a credential) that go into the body and a header.
        let keyPath = try harness.writeSecret("keyed-private-key", Self.privateKey)
        for line in Self.privateKey.split(separator: "\n") where !line.hasPrefix("-----") { harness.audit(secret: String(line)) }
        let credentials = harness.root + "/credentials"
        try FileManager.default.createDirectory(atPath: credentials, withIntermediateDirectories: true)
        try "SECRET-api-key-from-credential".write(toFile: credentials + "/api-key", atomically: true, encoding: .utf8)
        harness.audit(secret: "SECRET-api-key-from-credential")
        try harness.writeConnector(
            "keyed",
            """
            token_url = "\(harness.endpoint.tokenURL)"
            client_auth = "client_secret_post"
            [variables.private_key]
            required = true
            secret = true
            [variables.api_key]
            required = true
            secret = true
            [headers]
            X-Api-Key = "{{api_key}}"
            [body]
            grant_type = "client_credentials"
            client_id = "{{client_id}}"
            client_secret = "{{client_secret}}"
            client_assertion = "{{private_key}}"
            """
        )
        let keyedSecret = try harness.writeSecret("keyed", "SECRET-keyed-client")
        try harness.writeRaw(
            "keyed",
            """
            connector = "keyed"
            [variables]
            client_id = "keyed"
            client_secret = { file = "\(keyedSecret)" }
            private_key = { file = "\(keyPath)" }
            api_key = { credential = "api-key" }
            """
        )
        // A secret with a line break, headed for a header: the HTTP client refuses it, and says so without it.
        let headerSecret = try harness.writeSecret("header-newline", "SECRET-hdr-line1\nX-Injected: SECRET-hdr-line2")
        harness.audit(secret: "SECRET-hdr-line1")
        harness.audit(secret: "SECRET-hdr-line2")
        try harness.writeRaw(
            "header-newline",
            """
            token_url = "\(harness.endpoint.tokenURL)"
            [variables]
            client_id = "header-newline"
            client_secret = "not-a-secret-here"
            api_key = { file = "\(headerSecret)" }
            [headers]
            X-Api-Key = "{{api_key}}"
            """
        )
        // Broken files that hold inline secrets: their diagnostics must not quote them.
        harness.audit(secret: "SECRET-inline-unterminated")
        harness.audit(secret: "SECRET-inline-in-array")
        harness.audit(secret: "SECRET-inline-wrong-key")
        try harness.writeRaw(
            "broken-string",
            "token_url = \"\(harness.endpoint.tokenURL)\"\n[variables]\nclient_id = \"a\"\nclient_secret = \"SECRET-inline-unterminated\n"
        )
        try harness.writeRaw(
            "broken-array",
            "token_url = \"\(harness.endpoint.tokenURL)\"\n[variables]\nclient_id = \"a\"\nclient_secret = [\"SECRET-inline-in-array\"]\n"
        )
        try harness.writeRaw(
            "broken-key",
            "token_url = \"\(harness.endpoint.tokenURL)\"\nclient_secret = \"SECRET-inline-wrong-key\"\n[variables]\nclient_id = \"a\"\n"
        )

        try harness.start(environment: ["CREDENTIALS_DIRECTORY": credentials])
        try await harness.waitUntilReady()
        // Let the 4 s tokens refresh at least once.
        try await eventually("a refresh of every good instance", timeout: 15) {
            let ids = harness.endpoint.requests.compactMap { $0.clientCredentials?.id }
            return ["basic", "post"].allSatisfy { name in ids.filter { $0 == name }.count >= 2 }
        }
        #expect(try await harness.token("keyed") != nil, "log: \(harness.log.suffix(2000))")

        // Everything a reader, an operator or a monitor can see.
        var artifacts: [(what: String, text: String)] = []
        for uri in [
            "/v1/instances", "/v1/health", "/metrics", "/v1/tokens/echo", "/v1/tokens/echo-plain", "/v1/tokens/echo-basic",
            "/v1/tokens/header-newline", "/v1/tokens/broken-string", "/v1/tokens/echo?min_valid=60",
        ] {
            artifacts.append((uri, try await harness.get(uri).body))
        }
        let socket = ["--socket", harness.socketPath]
        for arguments in [["status"] + socket, ["status", "--json"] + socket, ["token", "echo"] + socket, ["refresh", "echo"] + socket] {
            let result = try harness.runCLI(arguments)
            artifacts.append(("tokend \(arguments.joined(separator: " "))", result.stdout + result.stderr))
        }
        let checkEnvironment = "CREDENTIALS_DIRECTORY=\(credentials)"
        for arguments in [[String](), ["--show", "basic"], ["--show", "post"], ["--show", "keyed"], ["--show", "header-newline"]] {
            let result = try runCommand(
                ["/usr/bin/env", checkEnvironment, try DaemonHarness.binaryPath(), "check", "--config-dir", harness.configDir] + arguments
            )
            artifacts.append(("tokend check \(arguments.joined(separator: " "))", result.stdout + result.stderr))
        }
        artifacts.append(
            (
                "invalidate",
                try harness.curl([
                    "-X", "POST", "-d", #"{"fingerprint":"0000000000000000"}"#, "http://localhost/v1/tokens/basic/invalidate",
                ]).body
            )
        )
        harness.signal(SIGHUP)
        try await harness.waitUntilReady(count: 2)
        artifacts.append(("STATUS=", harness.notify.assignments.joined(separator: "\n")))

        // The echoing providers were really asked with the secrets, and the failures were really reported.
        // (`echo` and `echo-basic` share the provider, and either may ask first.)
        #expect(echo.requests.contains { $0.formFields["client_secret"] == echoSecret })
        #expect(harness.log.contains("instance=echo ") && harness.log.contains("<redacted>"), "the echo was never logged")
        #expect(harness.loggedConfigErrors.contains { $0.contains("broken-string.toml") })
        // Tokens appear as fingerprints in the status.
        let statuses = try await harness.get("/v1/instances").json(API.InstancesBody.self).instances
        let basic = try #require(statuses.first { $0.name == "basic" })
        let current = try #require(try await harness.token("basic"))
        #expect(basic.token_fingerprint == WireDecoding.fingerprint(current))

        #expect(try await harness.stop() == 0)
        artifacts.append(("the daemon log after stop", harness.log))
        // The state directory holds only the cache files, and they hold no secret.
        let stateFiles = try FileManager.default.contentsOfDirectory(atPath: harness.stateDir)
        #expect(stateFiles.allSatisfy { $0.hasSuffix(".json") && !$0.hasPrefix(".") }, "\(stateFiles)")
        // Every Authorization header the endpoint saw is a secret too (Basic carries the secret base64-encoded).
        for request in harness.endpoint.requests + echo.requests + echoPlain.requests {
            if let authorization = request.header("authorization") { harness.audit(secret: authorization) }
        }
        let leaks = harness.leaks(in: artifacts)
        #expect(leaks.isEmpty, "\(leaks.joined(separator: "\n"))")
        #expect(harness.auditedSecrets.count >= 12)
        #expect(harness.auditedTokens.count >= 4)
    }
}
