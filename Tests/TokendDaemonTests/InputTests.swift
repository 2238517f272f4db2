import Foundation
import Testing
import TokendCore
import TokendIO
import TokendTestSupport

@testable import TokendDaemon

/// SPEC §11 in the daemon, driven with the twins and a manual clock: inputs read before every fetch and watched in
/// between, and instances that take other instances' tokens.
@Suite struct InputTests {
    /// The body of a request, as text.
    static func body(_ request: TokenRequest?) -> String {
        request.map { String(decoding: $0.body, as: UTF8.self) } ?? ""
    }

    /// A token-exchange instance whose subject token is instance `input`'s token.
    static func exchange(_ name: String, input: String, extra: String = "") -> String {
        instanceFile(
            name,
            extra: """
                \(extra)
                [body]
                grant_type = "urn:ietf:params:oauth:grant-type:token-exchange"
                subject_token = "{{subject_token}}"
                """,
            variables: #"subject_token = { instance = "\#(input)" }"#
        )
    }

    /// Tokens named after the instance and numbered by request: `alpha-1`, `beta-2`, …, each living `expiresIn` s.
    static func namedTokens(expiresIn: [String: Int] = [:], failing: Set<String> = []) -> ManualTokenEndpoint.Responder {
        { request, number in
            let name = request.url.split(separator: "/").dropLast().last.map(String.init) ?? "?"
            if failing.contains(name) { return ManualTokenEndpoint.error(status: 400, code: "invalid_client") }
            return ManualTokenEndpoint.token("\(name)-\(number)", expiresIn: expiresIn[name] ?? 1000)
        }
    }

    @Test func aWatchedFileThatChangesIsRefetchedWithItsNewValue() throws {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 1000))
        )
        daemon.start()
        #expect(daemon.inputs.watched == ["/secrets/alpha"])
        daemon.advance(by: 5)
        let first = try #require(daemon.servedToken("alpha"))
        #expect(Self.body(daemon.endpoint.requests.last).contains("client_secret=s3cret"))

        daemon.inputs.set("/secrets/alpha", to: "rotated\n", notify: true)
        daemon.settle()
        daemon.advance(by: 0)
        #expect(daemon.endpoint.requests.count == 2)
        #expect(Self.body(daemon.endpoint.requests.last).contains("client_secret=rotated"))
        #expect(daemon.servedToken("alpha") != first)
        // The same contents again: nothing to do.
        daemon.inputs.set("/secrets/alpha", to: "rotated", notify: true)
        daemon.advance(by: 5)
        #expect(daemon.endpoint.requests.count == 2)
    }

    /// A change right after a fetch waits for `min_interval`; the old token is served meanwhile.
    @Test func aChangeRightAfterAFetchWaitsForMinInterval() throws {
        let settings = exactSettings.replacingOccurrences(of: #"min_interval = "1s""#, with: #"min_interval = "30s""#)
        let daemon = TestDaemon(
            settings: settings,
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 1000))
        )
        daemon.start()
        let first = try #require(daemon.servedToken("alpha"))
        daemon.advance(by: 10)
        daemon.inputs.set("/secrets/alpha", to: "rotated", notify: true)
        daemon.advance(by: 19)
        #expect(daemon.endpoint.requests.count == 1)
        #expect(daemon.servedToken("alpha") == first)
        daemon.advance(by: 1)
        #expect(daemon.endpoint.requests.count == 2)
        #expect(Self.body(daemon.endpoint.requests.last).contains("client_secret=rotated"))
    }

    /// Without a watch event (no inotify), the read right before the next fetch sees the new value.
    @Test func theReadBeforeEachFetchSeesAChangeTheWatchMissed() throws {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 1000))
        )
        daemon.start()
        daemon.inputs.set("/secrets/alpha", to: "rotated", notify: false)
        daemon.advance(by: 499)
        #expect(daemon.endpoint.requests.count == 1)
        daemon.advance(by: 1)  // the refresh at half the lifetime
        #expect(daemon.endpoint.requests.count == 2)
        #expect(Self.body(daemon.endpoint.requests.last).contains("client_secret=rotated"))
    }

    /// A file the watch cannot watch (no inotify, a missing directory) is read every 5 s instead.
    @Test func aFileTheWatchCannotWatchIsPolled() throws {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 1000))
        )
        daemon.inputs.makeUnwatchable(["/secrets/alpha"])
        daemon.start()
        #expect(daemon.inputs.watched.isEmpty)
        daemon.advance(by: 10)
        #expect(daemon.endpoint.requests.count == 1)
        daemon.inputs.set("/secrets/alpha", to: "rotated", notify: false)
        daemon.advance(by: 5)
        #expect(daemon.endpoint.requests.count == 2)
        #expect(Self.body(daemon.endpoint.requests.last).contains("client_secret=rotated"))
    }

    @Test func aDeletedFileKeepsItsLastValueAndIsReported() throws {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 1000))
        )
        daemon.start()
        let served = daemon.servedToken("alpha")
        daemon.inputs.set("/secrets/alpha", to: nil, notify: true)
        daemon.settle()
        let machine = try #require(daemon.machine("alpha"))
        #expect(machine.reportedFailure?.code == "input_unreadable")
        #expect(machine.reportedFailure?.message.contains("client_secret") == true)
        #expect(machine.state(at: daemon.clock.now()) == .degraded)
        #expect(daemon.servedToken("alpha") == served)
        daemon.advance(by: 1)
        #expect(daemon.notifier.statuses.last?.contains("input_unreadable") == true, "\(daemon.notifier.statuses)")
        daemon.advance(by: 499)
        #expect(daemon.endpoint.requests.count == 2)
        #expect(Self.body(daemon.endpoint.requests.last).contains("client_secret=s3cret"))
        daemon.inputs.set("/secrets/alpha", to: "back", notify: true)
        daemon.settle()
        #expect(daemon.machine("alpha")?.reportedFailure == nil)
    }

    @Test func aDependentWaitsForItsInputAndFollowsItsToken() throws {
        let daemon = TestDaemon(
            instances: ["up": instanceFile("up"), "down": Self.exchange("down", input: "up")],
            endpoint: ManualTokenEndpoint(responder: Self.namedTokens(expiresIn: ["up": 100]))
        )
        daemon.start()
        daemon.advance(by: 0)  // the dependent's fetch, due once its input's token came
        let requests = daemon.endpoint.requests
        #expect(requests.map { $0.url.contains("/up/") } == [true, false])
        #expect(Self.body(requests.last).contains("subject_token=up-1"))
        #expect(daemon.servedToken("down") == "down-2")
        #expect(daemon.notifier.count(of: .ready) == 1)
        #expect(daemon.inputs.watched == ["/secrets/up", "/secrets/down"])

        daemon.advance(by: 50)  // up refreshes at half its lifetime; down follows
        #expect(daemon.endpoint.requests.count == 4)
        #expect(Self.body(daemon.endpoint.requests.last).contains("subject_token=up-3"))
        #expect(daemon.servedToken("down") == "down-4")
    }

    @Test func aFailingInputShowsOnItsDependentAndReadinessStillComes() throws {
        let daemon = TestDaemon(
            instances: ["up": instanceFile("up"), "down": Self.exchange("down", input: "up")],
            endpoint: ManualTokenEndpoint(responder: Self.namedTokens(failing: ["up"]))
        )
        daemon.start()
        #expect(daemon.endpoint.requests.count == 1)
        let down = try #require(daemon.machine("down"))
        #expect(down.reportedFailure?.code == "dependency_failed")
        #expect(down.reportedFailure?.message.contains("'up'") == true)
        #expect(down.reportedFailure?.message.contains("invalid_client") == true)
        #expect(daemon.notifier.count(of: .ready) == 1)
        let answer = daemon.wantToken("down", minValid: 0)
        #expect(answer.status == 503)
        #expect(answer.body.contains("dependency_failed"))

        // The provider lets `up` in again: the dependent follows without being asked.
        daemon.endpoint.respond(with: Self.namedTokens())
        daemon.advance(by: 600)
        #expect(daemon.servedToken("up") != nil)
        #expect(daemon.servedToken("down") != nil)
        #expect(daemon.machine("down")?.reportedFailure == nil)
    }

    /// An endpoint that echoes the subject token in its error never gets it into the reported failure.
    @Test func anEchoedInputTokenIsScrubbedFromTheFailure() throws {
        let daemon = TestDaemon(
            instances: ["up": instanceFile("up"), "down": Self.exchange("down", input: "up")],
            endpoint: ManualTokenEndpoint { request, number in
                guard request.url.contains("/down/") else { return ManualTokenEndpoint.token("up-secret-token-\(number)", expiresIn: 1000) }
                let body = String(decoding: request.body, as: UTF8.self)
                let object: [String: Any] = ["error": "invalid_request", "error_description": "bad subject in \(body)"]
                let data = (try? JSONSerialization.data(withJSONObject: object)).map { Array($0) } ?? []
                return .success(TokenEndpointResponse(status: 400, body: data))
            }
        )
        daemon.start()
        daemon.advance(by: 0)
        let failure = try #require(daemon.machine("down")?.lastFailure)
        #expect(failure.code == "invalid_request")
        #expect(failure.message.contains("bad subject"), "\(failure.message)")
        #expect(!failure.message.contains("up-secret-token-1"), "\(failure.message)")
    }

    /// A chain of three, the middle one bound to its input: never served past its input token.
    @Test func aChainOfThreeWithBoundToInput() throws {
        let daemon = TestDaemon(
            instances: [
                "a": instanceFile("a"),
                "b": Self.exchange("b", input: "a", extra: "bound_to_input = true"),
                "c": Self.exchange("c", input: "b"),
            ],
            endpoint: ManualTokenEndpoint(responder: Self.namedTokens(expiresIn: ["a": 100, "b": 1000, "c": 1000]))
        )
        daemon.start()
        daemon.advance(by: 0)
        #expect(daemon.endpoint.requests.map { $0.url.split(separator: "/")[2] } == ["a", "b", "c"])
        #expect(Self.body(daemon.endpoint.requests[1]).contains("subject_token=a-1"))
        #expect(Self.body(daemon.endpoint.requests[2]).contains("subject_token=b-2"))
        let a = try #require(daemon.machine("a")?.token)
        let b = try #require(daemon.machine("b")?.token)
        #expect(b.expiresAt <= a.serveUntil)
        let c = try #require(daemon.machine("c")?.token)
        #expect(c.expiresAt.timeIntervalSince(c.obtainedAt) == 1000)

        // `b`'s lifetime was cut to `a`'s, so it refreshes at half of that (47.5 s), and `c` follows; then `a`
        // refreshes (50 s), and `b` and `c` follow it.
        daemon.advance(by: 50)
        let names = daemon.endpoint.requests.map { $0.url.split(separator: "/")[2] }
        #expect(names == ["a", "b", "c", "b", "c", "a", "b", "c"])
        #expect(Self.body(daemon.endpoint.requests[3]).contains("subject_token=a-1"))
        #expect(Self.body(daemon.endpoint.requests[4]).contains("subject_token=b-4"))
        #expect(Self.body(daemon.endpoint.requests[6]).contains("subject_token=a-6"))
        #expect(Self.body(daemon.endpoint.requests[7]).contains("subject_token=b-7"))
        #expect(daemon.servedToken("c") == "c-8")
    }

    /// An input whose file breaks keeps running on its last good definition, and so does its dependent; an input
    /// that is removed shows on the dependent, which keeps serving its token meanwhile.
    @Test func aBrokenOrRemovedInput() throws {
        let daemon = TestDaemon(
            instances: ["up": instanceFile("up"), "down": Self.exchange("down", input: "up")],
            endpoint: ManualTokenEndpoint(responder: Self.namedTokens())
        )
        daemon.start()
        daemon.advance(by: 0)
        daemon.reload(loadConfig(instances: ["up": "token_url = \n", "down": Self.exchange("down", input: "up")]))
        #expect(daemon.servedToken("down") == "down-2")
        #expect(daemon.machine("down")?.reportedFailure == nil)
        // Gone altogether: `down` no longer loads (an unknown input), so it keeps its last good definition too.
        daemon.reload(loadConfig(instances: ["down": Self.exchange("down", input: "up")]))
        #expect(daemon.machine("up") == nil)
        #expect(daemon.servedToken("down") == "down-2")
        let problem = try #require(daemon.machine("down")?.reportedFailure)
        #expect(problem.code == "dependency_failed")
        #expect(problem.message == "input instance 'up' is not running")
    }
}
