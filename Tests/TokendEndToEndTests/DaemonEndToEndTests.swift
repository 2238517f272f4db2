import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The real `tokend` binary over a real Unix socket against a real HTTP token endpoint on 127.0.0.1.
@Suite(.serialized, .timeLimit(.minutes(3))) struct DaemonEndToEndTests {
    @Test func servesTheIssuedTokenAsJSONAndRaw() async throws {
        try await DaemonHarness.with { harness in
            let awkwardSecret = "p+a/s=s:w%o rd"
            harness.endpoint.expectClient(id: "alpha id", secret: awkwardSecret)
            try harness.writeInstance("alpha", clientID: "alpha id", secret: awkwardSecret + "\n")
            try harness.start()
            try await harness.waitUntilReady()

            let issued = harness.endpoint.issuedTokens
            #expect(issued.count == 1)
            let json = try await harness.get("/v1/tokens/alpha")
            #expect(json.status == 200)
            let body = try json.json(API.TokenBody.self)
            #expect(body.access_token == issued.first)
            #expect(body.instance == "alpha")
            #expect(body.token_type == "Bearer")
            #expect(body.expires_in > 3500 && body.expires_in <= 3600)
            #expect(try await harness.token("alpha") == issued.first)

            // The request the endpoint saw: Basic credentials with RFC 6749 §2.3.1 encoding, form body.
            let request = try #require(harness.endpoint.requests.first)
            #expect(request.method == "POST")
            #expect(request.bodyText == "grant_type=client_credentials&scope=read")
            #expect(request.clientCredentials?.secret == awkwardSecret)

            #expect(try await harness.get("/v1/tokens/nope").status == 404)
            #expect(try await harness.get("/nowhere").status == 404)
            #expect(try await harness.get("/v1/health").status == 200)
            #expect(try await harness.stop() == 0)
            let log = harness.log
            #expect(!log.contains(issued.first ?? "-"), "a token reached the log")
            #expect(!log.contains(awkwardSecret), "a secret reached the log")
            let cache = try String(contentsOfFile: harness.stateDir + "/alpha.json", encoding: .utf8)
            #expect(!cache.contains(awkwardSecret))
            let mode = try FileManager.default.attributesOfItem(atPath: harness.stateDir + "/alpha.json")[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }
    }

    @Test func shortLivedTokensAreRefreshedBeforeTheyExpire() async throws {
        try await DaemonHarness.with(lifetime: 3) { harness in
            try harness.writeInstance("short")
            try harness.start()
            try await harness.waitUntilReady()
            let started = Date()

            // Watch the served token for 7 s; each must change before the previous one's lifetime is over.
            var seen: [(token: String, firstSeen: Date)] = []
            while Date().timeIntervalSince(started) < 7 {
                if let token = try await harness.token("short"), token != seen.last?.token {
                    seen.append((token, Date()))
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            let requests = harness.endpoint.requests
            #expect(seen.count >= 3, "the token changed \(seen.count - 1) times in 7 s")
            for (index, entry) in seen.enumerated().dropFirst() {
                let previous = seen[index - 1].token
                guard let issuedAt = harness.endpoint.issuedTokens.firstIndex(of: previous).map({ requests[$0].receivedAt }) else {
                    Issue.record("served a token the endpoint never issued")
                    continue
                }
                #expect(entry.firstSeen.timeIntervalSince(issuedAt) < 3, "token \(index) replaced only after the old one expired")
            }
            // Refreshes come at 75 % ± 10 % of the lead: never more than one per ~2.1 s, plus the first fetch.
            let window = Date().timeIntervalSince(started) + 0.5
            #expect(requests.count <= 2 + Int(window / 2.1), "\(requests.count) requests in \(window) s")
            #expect(try await harness.stop() == 0)
        }
    }

    @Test func notifiesSystemdInOrder() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha")
            try harness.start(watchdogMicroseconds: 400_000)
            try await harness.waitUntilReady()
            #expect(harness.socketAcceptedAtReady == [true], "READY=1 arrived before the socket accepted connections")
            try await eventually("two watchdog pings") {
                harness.notify.assignments.filter { $0 == "WATCHDOG=1" }.count >= 2
            }
            #expect(try await harness.stop() == 0)
            let assignments = harness.notify.assignments
            #expect(assignments.contains { $0.hasPrefix("STATUS=1 instance: 1 valid") })
            let ready = try #require(assignments.firstIndex(of: "READY=1"))
            let stopping = try #require(assignments.firstIndex(of: "STOPPING=1"))
            #expect(ready < stopping)
            #expect(assignments.last { $0 == "WATCHDOG=1" } != nil)
        }
    }

    @Test func restartServesTheCachedTokenWithoutANewRequest() async throws {
        try await DaemonHarness.withRunning("alpha") { harness in
            let first = try await harness.token("alpha")
            #expect(try await harness.stop() == 0)
            #expect(harness.endpoint.requestCount == 1)

            try harness.start()
            try await harness.waitUntilReady(count: 2)
            #expect(try await harness.token("alpha") == first)
            #expect(harness.endpoint.requestCount == 1)
            #expect(try await harness.stop() == 0)
        }
    }

    @Test func reloadAddsRemovesAndKeepsInstances() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("keep")
            try harness.writeInstance("gone")
            try harness.writeInstance("changed", scope: "read")
            try harness.start()
            try await harness.waitUntilReady()
            let kept = try await harness.token("keep")
            let before = try await harness.token("changed")
            #expect(try await harness.token("gone") != nil)
            // Served means durable (issue 18): the cache file is there once the token was served.
            #expect(harness.cacheFileExists("gone"))
            let requestsBefore = harness.endpoint.requestCount

            try harness.removeInstance("gone")
            try harness.writeInstance("fresh")
            try harness.writeInstance("changed", scope: "read write")
            harness.signal(SIGHUP)
            try await harness.waitUntilReady(count: 2)

            // New and changed instances fetch after the reload's READY=1; wait for those fetches.
            try await eventually("the new instance is served") { try await harness.token("fresh") != nil }
            try await eventually("the changed instance has a new token") {
                let token = try await harness.token("changed")
                return token != nil && token != before
            }
            #expect(try await harness.get("/v1/tokens/gone").status == 404)
            try await eventually("the removed instance's cache file is deleted") { !harness.cacheFileExists("gone") }
            #expect(try await harness.token("keep") == kept)
            // A changed request definition gets a new token; an unchanged one keeps its own.
            #expect(
                harness.endpoint.requests.last { $0.clientCredentials?.id == "changed" }?.bodyText
                    == "grant_type=client_credentials&scope=read%20write"
            )
            #expect(harness.endpoint.requestCount == requestsBefore + 2)

            let assignments = harness.notify.assignments
            let reloading = try #require(assignments.firstIndex(of: "RELOADING=1"))
            #expect(assignments[reloading + 1].hasPrefix("MONOTONIC_USEC="))
            #expect(UInt64(assignments[reloading + 1].dropFirst("MONOTONIC_USEC=".count)) != nil)
            let secondReady = try #require(assignments.indices.filter { assignments[$0] == "READY=1" }.dropFirst().first)
            #expect(reloading < secondReady)
            #expect(try await harness.stop() == 0)
        }
    }
}
