import Foundation
import Testing
import TokendTestSupport

@testable import TokendCore

/// A fixed set of instances for the router.
struct FixedDirectory: InstanceDirectory {
    var machines: [String: InstanceStateMachine]

    func instance(named name: String) -> InstanceStateMachine? { machines[name] }
    func allInstances() -> [(name: String, machine: InstanceStateMachine)] { machines.map { ($0.key, $0.value) } }
}

@Suite struct APIRouterTests {
    let router = APIRouter()
    let directory: FixedDirectory

    init() {
        var generator = SeededGenerator(seed: 5)
        let policy = RefreshPolicy(RefreshSettings())
        var good = InstanceStateMachine(policy: policy)
        _ = good.started(cached: nil, now: epoch, using: &generator)
        _ = good.receivedAndStored(token(lifetime: 3600, value: "secret-token-1"), using: &generator)
        var failing = InstanceStateMachine(policy: policy)
        _ = failing.started(cached: nil, now: epoch, using: &generator)
        _ = failing.fetchFailed(
            FetchFailure(kind: .permanent, code: "invalid_client", message: "HTTP 401: invalid_client"),
            now: epoch,
            using: &generator
        )
        directory = FixedDirectory(machines: ["good": good, "bad": failing])
    }

    func get(_ target: String, accept: String? = nil) -> APIResponse {
        router.answer(
            to: APIRequest(method: "GET", target: target, accept: accept),
            instances: directory,
            now: epoch.addingTimeInterval(100)
        )
    }

    @Test func tokenAsJSON() throws {
        let response = get("/v1/tokens/good")
        #expect(response.status == 200)
        #expect(response.contentType == "application/json")
        let body = try JSONDecoder().decode(API.TokenBody.self, from: Data(response.body))
        #expect(body.access_token == "secret-token-1")
        #expect(body.instance == "good")
        #expect(body.token_type == "Bearer")
        #expect(body.expires_in == 3500)
        #expect(body.expires_at == Int(epoch.timeIntervalSince1970) + 3600)
        #expect(String(decoding: response.body, as: UTF8.self).contains(#""scope":null"#))
    }

    @Test func tokenRawAndHeaderForms() {
        #expect(String(decoding: get("/v1/tokens/good?format=raw").body, as: UTF8.self) == "secret-token-1")
        #expect(String(decoding: get("/v1/tokens/good", accept: "text/plain").body, as: UTF8.self) == "secret-token-1")
        #expect(String(decoding: get("/v1/tokens/good?format=header").body, as: UTF8.self) == "Bearer secret-token-1")
        #expect(get("/v1/tokens/good?format=xml").status == 400)
    }

    @Test func unknownInstanceAndPath() throws {
        let unknown = get("/v1/tokens/nope")
        #expect(unknown.status == 404)
        #expect(try JSONDecoder().decode(API.ErrorBody.self, from: Data(unknown.body)).error == "unknown_instance")
        #expect(get("/v2/whatever").status == 404)
        #expect(router.answer(to: APIRequest(method: "DELETE", target: "/v1/tokens/good"), instances: directory, now: epoch).status == 405)
    }

    @Test func noValidTokenIs503WithTheLastError() throws {
        let response = get("/v1/tokens/bad")
        #expect(response.status == 503)
        #expect(response.headers.contains { $0.name == "Retry-After" })
        let body = try JSONDecoder().decode(API.ErrorBody.self, from: Data(response.body))
        #expect(body.error == "no_valid_token")
        #expect(body.last_error == "invalid_client")
    }

    @Test func instancesShowStateButNeverTokens() throws {
        let response = get("/v1/instances")
        #expect(response.status == 200)
        #expect(!String(decoding: response.body, as: UTF8.self).contains("secret-token-1"))
        let body = try JSONDecoder().decode(API.InstancesBody.self, from: Data(response.body))
        #expect(body.instances.map(\.name) == ["bad", "good"])
        #expect(body.instances[0].state == "failing")
        #expect(body.instances[0].last_error?.code == "invalid_client")
        #expect(body.instances[1].state == "valid")
        #expect(body.instances[1].outage_budget_seconds == 3495)
        #expect(body.instances[1].token_fingerprint?.count == 16)
    }

    @Test func healthIs503WhenAnyInstanceLacksAToken() throws {
        let response = get("/v1/health")
        #expect(response.status == 503)
        let body = try JSONDecoder().decode(API.HealthBody.self, from: Data(response.body))
        #expect(body.reasons == ["bad": "invalid_client"])
    }

    @Test func statusLineSummarisesStates() {
        let line = StatusSummary.line([
            .init(name: "a", state: .valid, errorCode: nil),
            .init(name: "b", state: .valid, errorCode: nil),
            .init(name: "c", state: .failing, errorCode: "invalid_client"),
        ])
        #expect(line == "3 instances: 2 valid, 1 failing (c: invalid_client)")
    }

    /// Issue 18: STATUS= names the first broken file, not only how many there are.
    @Test func statusLineNamesTheFirstBrokenFile() {
        let line = StatusSummary.line(
            [.init(name: "a", state: .valid, errorCode: nil)],
            configErrors: 2,
            firstBrokenFile: "instances/broken.toml"
        )
        #expect(line == "1 instance: 1 valid; 2 config errors (instances/broken.toml)")
    }
}
