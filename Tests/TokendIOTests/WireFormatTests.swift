import Foundation
import Testing
import TokendCore
import TokendTestSupport

@testable import TokendIO

/// The exact bytes of each request style on the wire, as a recording token endpoint receives them from the real
/// AsyncHTTPClient adapter.
@Suite(.serialized, .timeLimit(.minutes(1))) struct WireFormatTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var connector: String
        var variables: String
        var uri: String
        var headers: [String: String]
        var body: String

        var testDescription: String { name }
    }

    static let id = "id+/=:%& x"
    static let secret = "s+/=:%& é"

    static let cases: [Case] = [
        Case(
            name: "client_secret_basic, form",
            connector: "client_auth = \"client_secret_basic\"\n",
            variables: "scope = \"a b\"\n",
            uri: "/token",
            headers: [
                "content-type": "application/x-www-form-urlencoded",
                "accept": "application/json",
                "authorization": "Basic " + Data("id%2B%2F%3D%3A%25%26%20x:s%2B%2F%3D%3A%25%26%20%C3%A9".utf8).base64EncodedString(),
            ],
            body: "grant_type=client_credentials&scope=a%20b"
        ),
        Case(
            name: "client_secret_basic raw, JSON",
            connector: "client_auth = \"client_secret_basic\"\nbasic_encoding = \"raw\"\ncontent_type = \"application/json\"\n",
            variables: "",
            uri: "/token",
            headers: [
                "content-type": "application/json",
                "authorization": "Basic " + Data("id+/=:%& x:s+/=:%& é".utf8).base64EncodedString(),
            ],
            body: #"{"grant_type":"client_credentials"}"#
        ),
        Case(
            name: "client_secret_post, form",
            connector: "client_auth = \"client_secret_post\"\n",
            variables: "scope = \"read\"\n",
            uri: "/token",
            headers: ["content-type": "application/x-www-form-urlencoded"],
            body: "grant_type=client_credentials&scope=read&client_id=id%2B%2F%3D%3A%25%26%20x&client_secret=s%2B%2F%3D%3A%25%26%20%C3%A9"
        ),
        Case(
            name: "client_secret_post, JSON",
            connector: "client_auth = \"client_secret_post\"\ncontent_type = \"application/json\"\n",
            variables: "",
            uri: "/token",
            headers: ["content-type": "application/json"],
            body: #"{"client_id":"id+\/=:%& x","client_secret":"s+\/=:%& é","grant_type":"client_credentials"}"#
        ),
        Case(
            name: "none, custom query, headers and body, a variable reused in URL and body",
            connector: """
                client_auth = "none"
                token_url = "{{base}}/t/{{tenant}}/token"
                [query]
                api-version = "2024-01"
                tenant = "{{tenant}}"
                [headers]
                X-Client = "{{client_id}}"
                [body]
                grant_type = "client_credentials"
                tenant = "{{tenant}}"
                key = "{{client_secret}}"

                """,
            variables: "tenant = \"t 1&2\"\n",
            uri: "/t/t%201&2/token?api-version=2024-01&tenant=t%201%262",
            headers: ["x-client": "id+/=:%& x", "content-type": "application/x-www-form-urlencoded"],
            body: "grant_type=client_credentials&tenant=t%201%262&key=s%2B%2F%3D%3A%25%26%20%C3%A9"
        ),
    ]

    @Test(arguments: cases)
    func requestBytesOnTheWire(_ testCase: Case) async throws {
        let server = LocalTokenServer(lifetime: 60)
        try await server.start(port: 0)
        let endpoint = HTTPTokenEndpoint(connectTimeout: 5, requestTimeout: 5)
        do {
            try await Self.check(testCase, server: server, endpoint: endpoint)
        } catch {
            await endpoint.shutdown()
            await server.stop()
            throw error
        }
        await endpoint.shutdown()
        await server.stop()
    }

    static func check(_ testCase: Case, server: LocalTokenServer, endpoint: HTTPTokenEndpoint) async throws {
        var connector = testCase.connector
        if !connector.contains("token_url") { connector = "token_url = \"{{base}}/token\"\n" + connector }
        let text =
            connector + """
                [variables]
                base = "http://127.0.0.1:\(server.port)"
                client_id = "\(Self.id)"
                client_secret = { file = "/secret" }
                \(testCase.variables)
                """
        let secret = Self.secret
        let loaded = ConfigLoader.load(.init(settings: nil, instances: [("w", .success(.init(path: "/c/instances/w.toml", text: text)))])) {
            _ in
            .success(.init(secret))
        }
        let resolved = try #require(loaded.instances["w"], "\(loaded.diagnostics)")
        let response = try await endpoint.send(resolved.request).get()
        #expect(response.status == 200)

        let recorded = try #require(server.requests.first)
        #expect(recorded.method == "POST")
        #expect(recorded.uri == testCase.uri)
        #expect(recorded.bodyText == testCase.body)
        for (name, value) in testCase.headers {
            #expect(recorded.header(name) == value, "header \(name)")
        }
        if testCase.headers["authorization"] == nil {
            #expect(recorded.header("authorization") == nil)
        }
        #expect(recorded.header("content-length") == String(testCase.body.utf8.count))
    }

    @Test func refusedConnectionFailsFastAsTransient() async throws {
        let server = LocalTokenServer()
        try await server.start(port: 0)
        let port = server.port
        await server.stop()
        let endpoint = HTTPTokenEndpoint(connectTimeout: 5, requestTimeout: 30)
        let started = Date()
        let result = await endpoint.send(TokenRequest(url: "http://127.0.0.1:\(port)/token", headers: [], body: []))
        await endpoint.shutdown()
        guard case .failure(let failure) = result else {
            Issue.record("expected a failure")
            return
        }
        #expect(failure.kind == .transient)
        #expect(failure.code == "network")
        // Not retried by the HTTP client until the 30 s deadline: tokend's own backoff decides.
        #expect(Date().timeIntervalSince(started) < 10)
    }
}
