import Foundation
import Testing

@testable import TokendCore

/// SPEC §3's request shaping: `method = "GET"`, `token_key = ""` for text/plain answers, and response keys an instance
/// overrides.
@Suite struct RequestShapeTests {
    static let imds = """
        token_url = "http://127.0.0.1:9101/metadata/identity/oauth2/token"
        method = "GET"

        [variables.resource]
        default = "https://management.azure.com/"

        [query]
        api-version = "2018-02-01"
        resource = "{{resource}}"

        [headers]
        Metadata = "true"
        """

    func load(connectors: [String: String], instances: [String: String], secrets: [String: String] = [:]) -> ConfigLoader.Loaded {
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
            guard case .file(let path) = source, let secret = secrets[path] else { return .failure(.init("no file \(source)")) }
            return .success(.init(secret))
        }
    }

    /// The same connector as POST or GET (the GET one has no `[body]` to lose).
    func imds(method: String, instance: String = "connector = \"imds\"\n[variables]\nclient_id = \"vm\"\n") throws -> ResolvedInstance {
        let connector = Self.imds.replacingOccurrences(of: "method = \"GET\"", with: "method = \"\(method)\"\nclient_auth = \"none\"")
        let loaded = load(connectors: ["imds": connector], instances: ["vm": instance])
        #expect(loaded.errors.isEmpty, "\(loaded.errors)")
        return try #require(loaded.instances["vm"])
    }

    @Test func getRequestHasTheQueryAndNoBody() throws {
        let request = try imds(method: "GET").request
        #expect(request.method == "GET")
        #expect(
            request.url
                == "http://127.0.0.1:9101/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"
        )
        #expect(request.body.isEmpty)
        // No body, so no Content-Type; the header the endpoint checks is there.
        #expect(request.headers == [.init("Accept", "application/json"), .init("Metadata", "true")])
    }

    @Test func theMethodIsPartOfTheFingerprint() throws {
        let get = try imds(method: "GET")
        let post = try imds(method: "POST")
        #expect(post.request.method == "POST")
        #expect(!post.request.body.isEmpty)
        #expect(get.fingerprint != post.fingerprint)
        // The same request but for its method fingerprints differently.
        var request = get.request
        let asGet = TokenRequestBuilder.fingerprint(of: request, get.definition.connector)
        request.method = "POST"
        #expect(TokenRequestBuilder.fingerprint(of: request, get.definition.connector) != asGet)
    }

    @Test func aGetConnectorWithoutClientAuthAuthenticatesWithNothing() throws {
        let loaded = load(connectors: ["imds": Self.imds], instances: ["vm": "connector = \"imds\"\n"])
        #expect(loaded.errors.isEmpty, "\(loaded.errors)")
        #expect(try #require(loaded.instances["vm"]).definition.connector.clientAuth == .none)
    }

    @Test func aBodyWithGetIsAnError() {
        let connector = Self.imds + "\n\n[body]\nresource = \"{{resource}}\"\n"
        let loaded = load(connectors: ["imds": connector], instances: [:])
        let error = loaded.errors.first { $0.key == "body" }
        #expect(error?.file == "/c/connectors/imds.toml")
        #expect(error?.line == 14)
        #expect(error?.message.contains("GET request has no body") == true)
    }

    @Test func aSecretInTheQueryOfAGetIsAnError() {
        let connector =
            Self.imds.replacingOccurrences(of: "method = \"GET\"", with: "method = \"GET\"\nclient_auth = \"client_secret_basic\"")
            .replacingOccurrences(of: "resource = \"{{resource}}\"", with: "resource = \"{{resource}}\"\nkey = \"{{client_secret}}\"")
        let loaded = load(connectors: ["imds": connector], instances: [:])
        let error = loaded.errors.first { $0.key == "query.key" }
        #expect(error?.line == 11)
        #expect(error?.message.contains("secret variable 'client_secret' in the query of a GET") == true)
    }

    @Test func aVariableReadFromAFileInTheQueryOfAGetIsAnErrorOfTheInstance() {
        let instance = "connector = \"imds\"\n\n[variables]\nresource = { file = \"/s/resource\" }\n"
        let loaded = load(connectors: ["imds": Self.imds], instances: ["vm": instance], secrets: ["/s/resource": "r"])
        let error = loaded.errors.first { $0.file == "/c/instances/vm.toml" }
        #expect(error?.key == "variables.resource")
        #expect(error?.line == 4)
        #expect(error?.message.contains("query of a GET") == true)
        #expect(loaded.instances["vm"] == nil)
    }

    @Test func aGetCannotUseAnAuthenticationThatNeedsABody() {
        let connector = Self.imds.replacingOccurrences(
            of: "method = \"GET\"",
            with: "method = \"GET\"\nclient_auth = \"client_secret_post\""
        )
        let loaded = load(connectors: ["imds": connector], instances: [:])
        #expect(loaded.errors.contains { $0.key == "client_auth" && $0.message.contains("a GET has none") })
    }

    @Test func anUnknownMethodIsAnError() {
        let connector = Self.imds.replacingOccurrences(of: "\"GET\"", with: "\"PUT\"")
        let loaded = load(connectors: ["imds": connector], instances: [:])
        #expect(loaded.errors.contains { $0.key == "method" && $0.line == 2 })
    }

    // MARK: - text/plain

    func parsePlain(_ body: String, contentType: String? = "text/plain", ttl: Double? = 600) -> Result<IssuedToken, FetchFailure> {
        TokenResponseParser.parse(
            status: 200,
            body: Array(body.utf8),
            shape: .init(tokenKey: "", defaultTTL: ttl),
            contentType: contentType,
            now: epoch
        )
    }

    @Test(arguments: ["plain-token-1\n", "plain-token-1\r\n", "plain-token-1"])
    func aTextPlainBodyIsTheToken(body: String) throws {
        let token = try parsePlain(body).get()
        #expect(token.accessToken.revealed == "plain-token-1")
        #expect(token.tokenType == "Bearer")
        #expect(token.expiresAt == epoch.addingTimeInterval(600))
    }

    @Test func aPlainJWTTakesItsLifetimeFromExp() throws {
        let payload = Data(#"{"exp":\#(Int(epoch.timeIntervalSince1970) + 300)}"#.utf8).base64EncodedString()
            .replacingOccurrences(of: "=", with: "")
        let jwt = "eyJhbGciOiJub25lIn0.\(payload).c2ln"
        let token = try parsePlain(jwt + "\n", ttl: nil).get()
        #expect(token.expiresAt == epoch.addingTimeInterval(300))
    }

    @Test func plainTextAnswersThatAreNoTokenFailWithoutQuotingThem() {
        for (body, contentType) in [
            ("", "text/plain"), ("two words", "text/plain"), ("{\"access_token\":\"x\"}", "application/json"),
            (String(repeating: "a", count: 70_000), "text/plain"),
        ] {
            guard case .failure(let failure) = parsePlain(body, contentType: contentType) else {
                Issue.record("accepted \(body.prefix(20))")
                continue
            }
            #expect(failure.code == "invalid_response")
            if !body.isEmpty { #expect(!failure.message.contains(String(body.prefix(9)))) }
        }
        guard case .failure(let failure) = parsePlain("tok", ttl: nil) else {
            Issue.record("a token without any lifetime was accepted")
            return
        }
        #expect(failure.code == "no_lifetime")
    }

    @Test func anEmptyTokenKeyIsAllowedOnlyForTheToken() {
        let connector = "token_url = \"https://a.example.com/t\"\ntoken_key = \"\"\ntoken_type_key = \"\"\n"
        let loaded = load(connectors: ["plain": connector], instances: [:])
        #expect(loaded.errors.map(\.key) == ["token_type_key"])
    }

    // MARK: - instance overrides

    @Test func anInstanceOverridesTheResponseKeysAndSoItsFingerprint() throws {
        let connector = "token_url = \"https://a.example.com/t\"\n"
        let plain = "connector = \"acme\"\n[variables]\nclient_id = \"a\"\nclient_secret = { file = \"/s/a\" }\n"
        let overridden =
            "connector = \"acme\"\ntoken_key = \"data.jwt\"\nexpires_in_key = \"data.ttl\"\nexpires_at_key = \"data.until\"\n"
            + "token_type_key = \"data.kind\"\n[variables]\nclient_id = \"a\"\nclient_secret = { file = \"/s/a\" }\n"
        let loaded = load(connectors: ["acme": connector], instances: ["a": plain, "b": overridden], secrets: ["/s/a": "s"])
        #expect(loaded.errors.isEmpty, "\(loaded.errors)")
        let a = try #require(loaded.instances["a"])
        let b = try #require(loaded.instances["b"])
        #expect(a.definition.connector.tokenKey == "access_token")
        let shape = TokenResponseParser.Shape(b.definition.connector)
        #expect(shape == .init(tokenKey: "data.jwt", tokenTypeKey: "data.kind", expiresInKey: "data.ttl", expiresAtKey: "data.until"))
        #expect(a.fingerprint != b.fingerprint)
        let onlyToken = load(
            connectors: ["acme": connector],
            instances: ["c": plain.replacingOccurrences(of: "\n[variables]", with: "\ntoken_key = \"jwt\"\n[variables]")],
            secrets: ["/s/a": "s"]
        )
        #expect(try #require(onlyToken.instances["c"]).fingerprint != a.fingerprint)
    }

    @Test func anOverriddenResponseKeyIsCheckedLikeTheConnectorsOwn() {
        let loaded = load(
            connectors: ["acme": "token_url = \"https://a.example.com/t\"\n"],
            instances: [
                "a": "connector = \"acme\"\nexpires_in_key = \"data..ttl\"\n[variables]\nclient_id = \"a\"\nclient_secret = \"s\"\n"
            ]
        )
        #expect(loaded.errors.map(\.key) == ["expires_in_key"])
        #expect(loaded.errors.first?.line == 2)
    }
}
