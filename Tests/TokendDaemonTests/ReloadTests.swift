import Foundation
import Testing
import TokendCore
import TokendIO
import TokendTestSupport

@testable import TokendDaemon

/// SIGHUP: RELOADING=1, the plan applied in one step, READY=1 after; broken files keep the last good definition.
@Suite struct ReloadTests {
    static let files = [
        "alpha": instanceFile("alpha"), "beta": instanceFile("beta"),
        "gamma": instanceFile("gamma", extra: #"sink = { path = "/sinks/gamma" }"#),
    ]

    func running() -> TestDaemon {
        let daemon = TestDaemon(instances: Self.files, endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 1000)))
        daemon.start()
        daemon.advance(by: 5)
        return daemon
    }

    @Test func addedChangedUnchangedAndRemovedInstances() throws {
        let daemon = running()
        let beta = try #require(daemon.servedToken("beta"))
        let alpha = try #require(daemon.servedToken("alpha"))
        #expect(daemon.sinks.contents(of: "/sinks/gamma") != nil)
        daemon.notifier.removeAll()
        var files = Self.files
        files["alpha"] = instanceFile("alpha", variables: #"scope = "more""#)  // changed
        files["gamma"] = nil  // removed
        files["delta"] = instanceFile("delta")  // added
        daemon.reload(loadConfig(instances: files))
        // RELOADING=1 with the monotonic time first, READY=1 after.
        let datagrams = daemon.notifier.datagrams
        #expect(datagrams.first == [.reloading(monotonicMicroseconds: daemon.clock.monotonicMicroseconds())])
        #expect(datagrams.last?.first == .ready)
        #expect(daemon.endpoint.requests.count == 3 + 2)
        #expect(daemon.servedToken("beta") == beta)
        #expect(daemon.servedToken("alpha") != alpha)
        #expect(daemon.servedToken("delta") != nil)
        #expect(daemon.machine("gamma") == nil)
        #expect(daemon.sinks.contents(of: "/sinks/gamma") == nil)
        #expect(daemon.cache.operations.contains(.remove("gamma")))
        #expect(daemon.cache.operations.contains(.remove("alpha")))
    }

    @Test func aChangedSecretIsANewRequest() throws {
        let daemon = running()
        let before = daemon.endpoint.requests.count
        daemon.reload(loadConfig(instances: Self.files, secrets: ["beta": "rotated"]))
        #expect(daemon.endpoint.requests.count == before + 1)
        let request = try #require(daemon.endpoint.requests.last)
        #expect(request.url.contains("/beta/"))
        #expect(String(decoding: request.body, as: UTF8.self).contains("client_secret=rotated"))
    }

    @Test func aBrokenFileKeepsItsInstanceRunningOnTheLastGoodDefinition() {
        let daemon = running()
        let before = daemon.endpoint.requests.count
        var files = Self.files
        files["beta"] = "token_url = \n"
        daemon.reload(loadConfig(instances: files))
        #expect(daemon.endpoint.requests.count == before)
        #expect(daemon.servedToken("beta") != nil)
        // Issue 18: STATUS= names the broken file.
        #expect(daemon.notifier.statuses.last == "3 instances: 3 valid; 1 config error (instances/beta.toml)")
        daemon.advance(by: 500.1)  // refreshes still happen
        #expect(daemon.endpoint.requests.count == before + 3)
    }

    @Test func aBrokenTokendTomlRejectsTheWholeReload() {
        let daemon = running()
        let before = daemon.endpoint.requests.count
        var files = Self.files
        files["delta"] = instanceFile("delta")
        // A broken instance file beside it: STATUS= blames tokend.toml, not the file that sorts first.
        var withBrokenInstance = files
        withBrokenInstance["aardvark"] = "token_url = \n"
        daemon.reload(loadConfig(settings: "nonsense = 1\n", instances: withBrokenInstance))
        #expect(daemon.machine("delta") == nil)
        #expect(daemon.endpoint.requests.count == before)
        #expect(
            daemon.notifier.statuses.last?.hasSuffix("; reload rejected: tokend.toml is invalid") == true,
            "\(daemon.notifier.statuses)"
        )
        // A good reload clears it.
        daemon.reload(loadConfig(instances: files))
        daemon.advance(by: 0.2)  // STATUS= is coalesced
        #expect(daemon.machine("delta") != nil)
        #expect(daemon.notifier.statuses.last == "4 instances: 4 valid")
    }

    @Test func anUnreadableDirectoryRejectsTheReload() {
        let daemon = running()
        daemon.config.fail(ConfigDirectory.Unreadable(path: "/cfg", reason: "config directory is not readable", errno: 13))
        daemon.reloadAsIs()
        #expect(daemon.machine("alpha") != nil)
        #expect(daemon.notifier.statuses.last?.hasSuffix("reload rejected: /cfg: config directory is not readable") == true)
    }

    @Test func newSettingsTakeEffect() {
        let daemon = running()
        let settings = exactSettings.replacingOccurrences(of: "ratio = 0.5", with: "ratio = 0.9")
        daemon.reload(loadConfig(settings: settings, instances: Self.files))
        // The next refresh is drawn with the new ratio: 900 s after the token was obtained, not 500 s.
        daemon.endpoint.respond(with: numberedTokens(expiresIn: 1000))
        let before = daemon.endpoint.requests.count
        daemon.advance(by: 495.1)  // t = 500.1: the current schedule stays, 500 s after start
        #expect(daemon.endpoint.requests.count == before + 3)
        daemon.advance(by: 898.9)  // t = 1399.9; the refresh is due at 500 + 900 s
        #expect(daemon.endpoint.requests.count == before + 3)
        daemon.advance(by: 1.1)
        #expect(daemon.endpoint.requests.count == before + 6)
    }
}
