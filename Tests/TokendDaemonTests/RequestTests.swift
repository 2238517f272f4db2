import Foundation
import Testing
import TokendCore
import TokendIO
import TokendTestSupport

@testable import TokendDaemon

/// Requests that need the scheduler: min_valid waits and single flight, refresh, invalidate, watch; and the fetch limits.
@Suite struct RequestTests {
    @Test func minValidRequestsShareOneRefresh() throws {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100))
        )
        daemon.start()
        daemon.endpoint.respond { _, _ in nil }
        daemon.advance(by: 10)
        // The token has 90 s left: three callers that want 95 s wait for one shared refresh.
        let answers = (1...3).map { _ in daemon.wantToken("alpha", minValid: 95) }
        #expect(daemon.endpoint.requests.count == 2)
        #expect(answers.allSatisfy { $0.all.isEmpty })
        daemon.endpoint.complete(with: ManualTokenEndpoint.token("fresh", expiresIn: 100))
        daemon.settle()
        #expect(answers.map(\.accessToken) == ["fresh", "fresh", "fresh"])
        // A caller content with what is served does not cause a fetch.
        #expect(daemon.wantToken("alpha", minValid: 50).accessToken == "fresh")
        #expect(daemon.endpoint.requests.count == 2)
    }

    @Test func aStartUpRequestWaitsForTheFirstToken() {
        let daemon = TestDaemon(instances: ["alpha": instanceFile("alpha")])
        daemon.start()
        let waiting = daemon.wantToken("alpha", minValid: 0)
        #expect(waiting.all.isEmpty)
        #expect(daemon.endpoint.requests.count == 1)  // it joined the first fetch
        daemon.endpoint.complete(with: ManualTokenEndpoint.token("first", expiresIn: 100))
        daemon.settle()
        #expect(waiting.accessToken == "first")
        #expect(daemon.notifier.count(of: .ready) == 1)
    }

    @Test func aWaitEndsAfterTheRequestTimeout() {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100))
        )
        daemon.start()
        daemon.endpoint.respond { _, _ in nil }
        daemon.advance(by: 2)  // past min_interval
        let waiting = daemon.wantToken("alpha", minValid: 200)
        daemon.advance(by: 19.9)
        #expect(waiting.all.isEmpty)
        daemon.advance(by: 0.2)
        #expect(waiting.status == 503)
        #expect(waiting.body.contains("timed out waiting for a refresh"))
        #expect(waiting.header("Retry-After") == "1")
    }

    @Test func minValidDoesNotFetchMoreOftenThanMinInterval() {
        let settings = exactSettings.replacingOccurrences(of: #"min_interval = "1s""#, with: #"min_interval = "30s""#)
        let daemon = TestDaemon(
            settings: settings,
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100))
        )
        daemon.start()
        daemon.advance(by: 5)
        let refused = daemon.wantToken("alpha", minValid: 99)
        #expect(refused.status == 503)
        #expect(refused.body.contains("min_interval"))
        #expect(daemon.endpoint.requests.count == 1)
        daemon.advance(by: 26)
        #expect(daemon.wantToken("alpha", minValid: 99).status == 503)  // the new token has 100 s, but 99 s left now
        #expect(daemon.endpoint.requests.count == 2)
    }

    @Test func minValidCannotForceAFetchBeforePermanentRetry() {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint { _, _ in ManualTokenEndpoint.error(status: 401, code: "invalid_client") }
        )
        daemon.start()
        daemon.advance(by: 5)
        let refused = daemon.wantToken("alpha", minValid: 0)
        #expect(refused.status == 503)
        #expect(refused.body.contains("invalid_client"))
        // The next attempt is permanent_retry (600 s) after the failure: 595 s from now.
        #expect(refused.header("Retry-After") == "595")
        #expect(daemon.endpoint.requests.count == 1)
    }

    @Test func aFailedSharedRefreshAnswersEveryWaiter() {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100))
        )
        daemon.start()
        daemon.endpoint.respond { _, _ in nil }
        daemon.advance(by: 2)
        let waiting = [daemon.wantToken("alpha", minValid: 99), daemon.wantToken("alpha", minValid: 99)]
        daemon.endpoint.complete(with: ManualTokenEndpoint.error(status: 400, code: "invalid_scope"))
        daemon.settle()
        for answer in waiting {
            #expect(answer.status == 503)
            #expect(answer.body.contains("invalid_scope"))
            // A permanent failure: the next attempt is permanent_retry (600 s) away.
            #expect(answer.header("Retry-After") == "600")
        }
    }

    @Test func invalidationDropsTheNamedTokenOnly() throws {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100))
        )
        daemon.start()
        let current = try #require(daemon.machine("alpha")?.token?.fingerprint)
        daemon.advance(by: 2)
        let stale = daemon.ask { .invalidationWanted(name: "alpha", fingerprint: "0123456789abcdef", reply: $0) }
        #expect(stale.status == 200)
        #expect(daemon.endpoint.requests.count == 1)
        let accepted = daemon.ask { .invalidationWanted(name: "alpha", fingerprint: current, reply: $0) }
        #expect(accepted.status == 202)
        #expect(daemon.endpoint.requests.count == 2)
        #expect(daemon.servedToken("alpha") == "t2")
    }

    /// Issue 18, finding 6: a reader looping on `invalidate` with the current fingerprint gets one accepted
    /// invalidation (and one fetch) per `min_interval`; a plain read meanwhile waits for the replacement and gets it.
    @Test func aLoopingInvalidatorCannotKeepTheTokenFromOthers() throws {
        let settings = exactSettings.replacingOccurrences(of: #"min_interval = "1s""#, with: #"min_interval = "30s""#)
        let daemon = TestDaemon(
            settings: settings,
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 3600))
        )
        daemon.start()
        daemon.advance(by: 31)
        var accepted = 0
        var readsWithoutToken = 0
        for _ in 0..<200 {
            if let fingerprint = daemon.machine("alpha")?.token?.fingerprint {
                let answer = daemon.ask { .invalidationWanted(name: "alpha", fingerprint: fingerprint, reply: $0) }
                if answer.status == 202 { accepted += 1 }
            }
            // The reader root: what the snapshot answers (or, with no token, the wait the router sends it to).
            if daemon.servedToken("alpha") == nil, daemon.wantToken("alpha", minValid: 0).accessToken == nil {
                readsWithoutToken += 1
            }
            daemon.advance(by: 0.5)
        }
        // 100 s: the invalidations at 31 s, 61 s, 91 s and 121 s are accepted, one fetch each.
        #expect(accepted == 4)
        #expect(daemon.endpoint.requests.count == 5)
        #expect(readsWithoutToken == 0)
    }

    /// Issue 18, served means durable: a fetched token is not served, handed to a waiter or to a watch stream
    /// before its cache write is done.
    @Test func aTokenIsServedOnlyOnceItsCacheWriteIsDone() {
        let cache = InMemoryTokenCache()
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100)),
            cache: cache
        )
        daemon.start()
        let stream = RecordingEventStream()
        daemon.scheduler.send(.watchWanted(name: "alpha", peer: nil) { stream })
        daemon.endpoint.respond { _, _ in nil }
        daemon.advance(by: 10)
        let waiting = daemon.wantToken("alpha", minValid: 90)
        #expect(daemon.endpoint.requests.count == 2)
        cache.holdWrites()
        daemon.endpoint.complete(with: ManualTokenEndpoint.token("fresh", expiresIn: 100))
        // Only the scheduler queue: the I/O queue is stuck in the write.
        for _ in 0..<3 { daemon.scheduler.queue.sync {} }
        #expect(waiting.all.isEmpty)
        #expect(daemon.servedToken("alpha") == "t1")
        #expect(stream.events.count == 1)
        #expect(cachedToken(cache, "alpha") == "t1")
        cache.releaseWrites()
        daemon.settle()
        #expect(cachedToken(cache, "alpha") == "fresh")
        #expect(waiting.accessToken == "fresh")
        #expect(daemon.servedToken("alpha") == "fresh")
        #expect(stream.events.count == 2)
    }

    /// Issue 18, finding 3: a reload that takes a caller out of `[access]` ends its watch stream and its wait; an
    /// allowed caller's stay.
    @Test func aReloadEndsTheStreamsAndWaitsOfCallersNoLongerAllowed() {
        let alice = PeerCredentials(uid: 1001, gid: 1001, pid: 10)
        let bob = PeerCredentials(uid: 1002, gid: 1002, pid: 11)
        let open = instanceFile("alpha", extra: "")
        let daemon = TestDaemon(
            instances: ["alpha": open, "beta": instanceFile("beta")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100))
        )
        daemon.start()
        let streams = (alice: RecordingEventStream(), bob: RecordingEventStream())
        daemon.scheduler.send(.watchWanted(name: "alpha", peer: alice) { streams.alice })
        daemon.scheduler.send(.watchWanted(name: "alpha", peer: bob) { streams.bob })
        daemon.endpoint.respond { _, _ in nil }
        daemon.advance(by: 10)
        let waits = (
            alice: daemon.ask { .tokenWanted(name: "alpha", minValid: 90, format: .raw, peer: alice, reply: $0) },
            bob: daemon.ask { .tokenWanted(name: "alpha", minValid: 90, format: .raw, peer: bob, reply: $0) }
        )
        #expect(waits.alice.all.isEmpty && waits.bob.all.isEmpty)
        // The fetch is still in flight; the reload keeps the instance's token and schedule (only [access] changed).
        let restricted = open.replacingOccurrences(of: "[variables]", with: "[access]\nusers = [1001]\n[variables]")
        daemon.reload(loadConfig(instances: ["alpha": restricted, "beta": instanceFile("beta")]))
        #expect(!streams.bob.isOpen)
        #expect(waits.bob.status == 404)
        #expect(streams.alice.isOpen)
        #expect(waits.alice.all.isEmpty)
        daemon.endpoint.complete(with: ManualTokenEndpoint.token("fresh", expiresIn: 100))
        daemon.settle()
        #expect(waits.alice.status == 200)
        #expect(streams.alice.events.last?.contains("fresh") == true)
        #expect(streams.bob.events.count == 1)
    }

    @Test func refreshJoinsAFetchInFlight() {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100))
        )
        daemon.start()
        daemon.endpoint.respond { _, _ in nil }
        #expect(daemon.ask { .refreshWanted(name: "alpha", reply: $0) }.status == 202)
        #expect(daemon.ask { .refreshWanted(name: "alpha", reply: $0) }.status == 202)
        #expect(daemon.endpoint.requests.count == 2)
        #expect(daemon.ask { .refreshWanted(name: "nobody", reply: $0) }.status == 404)
    }

    @Test func watchersGetTheCurrentTokenAndEachNewOne() {
        let daemon = TestDaemon(
            instances: ["alpha": instanceFile("alpha")],
            endpoint: ManualTokenEndpoint(responder: numberedTokens(expiresIn: 100))
        )
        daemon.start()
        let stream = RecordingEventStream()
        daemon.scheduler.send(.watchWanted(name: "alpha", peer: nil) { stream })
        daemon.settle()
        daemon.advance(by: 50.1)
        #expect(stream.events.count == 2)
        #expect(stream.events.first?.contains(#""access_token":"t1""#) == true)
        #expect(stream.events.last?.contains(#""access_token":"t2""#) == true)
        #expect(stream.isOpen)
    }

    @Test func perEndpointAndOverallLimitsHoldFetchesBackInOrder() {
        let settings = exactSettings.replacingOccurrences(
            of: "[refresh]\n",
            with: "[refresh]\nmax_concurrent = 3\nper_endpoint_concurrent = 2\n"
        )
        let names = (1...6).map { "a\($0)" } + (1...6).map { "b\($0)" }
        let daemon = TestDaemon(
            settings: settings,
            instances: Dictionary(
                uniqueKeysWithValues: names.map { ($0, instanceFile($0, host: $0.hasPrefix("a") ? "127.0.0.1:9001" : "127.0.0.1:9002")) }
            )
        )
        daemon.start()
        var served: [String] = []
        while daemon.endpoint.heldCount > 0 {
            #expect(daemon.endpoint.heldCount <= 3)
            let request = daemon.endpoint.complete(with: ManualTokenEndpoint.token("t", expiresIn: 1000))
            daemon.settle()
            served.append(request.map { String($0.url.split(separator: "/")[2]) } ?? "?")
        }
        #expect(Set(served) == Set(names))
        #expect(daemon.scheduler.peakFetches.overall == 3)
        #expect(daemon.scheduler.peakFetches.perHost == 2)
        // Within one host, first in, first out.
        #expect(served.filter { $0.hasPrefix("a") } == (1...6).map { "a\($0)" })
    }
}

/// The token the cache twin holds for `name`.
func cachedToken(_ cache: InMemoryTokenCache, _ name: String) -> String? {
    guard case .loaded(let record) = cache.load(instance: name) else { return nil }
    return record.token.accessToken.revealed
}
