import Foundation
import Testing
import TokendCore
import TokendTestSupport

/// Issue 18 through the real socket: what a local user who may read little or nothing can no longer do (revoked
/// access that stays open, an invalidation loop, a flood of refusals in the log, `/v1/health` naming what it may not
/// see).
@Suite(.serialized, .timeLimit(.minutes(3))) struct AccessHardeningEndToEndTests {
    static let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

    /// Finding 3: a watch stream opened while the caller was allowed ends at the reload that takes the caller out of
    /// `[access]`; an allowed caller's stream stays open.
    @Test(.enabled(if: Privileges.isRoot, "needs root: setpriv runs the watching caller as another uid"))
    func aReloadThatRevokesAccessEndsTheCallersWatchStream() async throws {
        try await DaemonHarness.with { harness in
            try harness.openUpForOtherUsers()
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            let revoked = try Self.watch(harness, as: Self.nobody, output: harness.root + "/nobody.out")
            let kept = try Self.watch(harness, as: [], output: harness.root + "/root.out")
            defer {
                revoked.terminate()
                kept.terminate()
            }
            try await eventually("both streams have the current token") {
                Self.events(harness.root + "/nobody.out") == 1 && Self.events(harness.root + "/root.out") == 1
            }
            try harness.writeInstance("alpha", extra: "[access]\nusers = [0]\n")
            harness.signal(SIGHUP)
            try await harness.waitUntilReady(count: 2)
            try await eventually("the revoked caller's stream ends") { !revoked.isRunning }
            #expect(kept.isRunning)
            try await eventually("the refusal is logged with the caller") {
                harness.log.contains("request refused") && harness.log.contains("peer.uid=65534")
            }
            #expect(try await harness.stop() == 0)
        }
    }

    /// Finding 6: a reader looping on `invalidate` with the current fingerprint gets one accepted invalidation per
    /// `min_interval` (1 s); a plain read after each attempt gets a token every time.
    @Test func anInvalidationLoopNeitherStarvesReadersNorHammersTheProvider() async throws {
        try await DaemonHarness.withRunning("alpha") { harness in
            let start = Stopwatch()
            var accepted = 0
            var refusedReads: [String] = []
            var reads = 0
            // At least 3 s and 20 rounds (a busy machine makes fewer rounds; the bound below uses the time taken).
            while reads < 20 || start.elapsed < 3 {
                let listed = try JSONDecoder().decode(
                    API.InstancesBody.self,
                    from: Data(try await harness.curlAsync(["http://localhost/v1/instances"]).body.utf8)
                )
                if let fingerprint = listed.instances.first?.token_fingerprint {
                    let answer = try await harness.curlAsync([
                        "-X", "POST", "-d", #"{"fingerprint":"\#(fingerprint)"}"#, "http://localhost/v1/tokens/alpha/invalidate",
                    ])
                    if answer.status == 202 { accepted += 1 }
                }
                let read = try await harness.get("/v1/tokens/alpha?format=raw")
                reads += 1
                if read.status != 200 { refusedReads.append("\(read.status): \(read.body.prefix(120))") }
            }
            let elapsed = start.elapsed
            #expect(refusedReads.isEmpty, "\(refusedReads.count) of \(reads) reads failed: \(refusedReads.prefix(3))")
            // One accepted per started second (min_interval 1 s), plus the first token.
            #expect(accepted >= 1 && Double(accepted) <= elapsed.rounded(.up) + 1, "\(accepted) accepted in \(elapsed) s")
            #expect(harness.endpoint.requestCount == accepted + 1)
            #expect(try await harness.stop() == 0)
        }
    }

    /// Finding 7: 1,000 refused requests of one caller are two log lines (the first, then a summary with the count),
    /// not 1,000.
    @Test(.enabled(if: Privileges.isRoot, "needs root: setpriv runs the refused caller as another uid"))
    func refusalsAreLoggedOncePerCallerAndSummedUp() async throws {
        try await DaemonHarness.with { harness in
            try harness.openUpForOtherUsers()
            try harness.writeInstance("private", extra: "[access]\nusers = [0]\n")
            try harness.start()
            try await harness.waitUntilReady()
            // curl's URL globbing: 1,000 requests over one kept-alive connection.
            let flood = try await harness.curlAsync(["http://localhost/v1/tokens/private?n=[1-1000]"], as: Self.nobody)
            #expect(flood.status == 404)
            #expect(!flood.body.contains("tok-"))
            #expect(try await harness.stop() == 0)
            let lines = harness.log.split(separator: "\n")
            let first = lines.filter { $0.contains("request refused") && $0.contains("peer.uid=65534") }
            let summaries = lines.filter { $0.contains("more requests refused") && $0.contains("peer.uid=65534") }
            #expect(first.count == 1, "\(first.count) lines for the first refusal")
            let counted = summaries.compactMap { line in
                line.range(of: "count=").flatMap { Int(line[$0.upperBound...].prefix { $0.isNumber }) }
            }
            #expect(counted.reduce(0, +) == 999, "\(summaries)")
            #expect(summaries.count <= 2)
        }
    }

    /// Finding 8: `/v1/health` names and counts only the instances the caller may read: a failing instance that only
    /// root may read is invisible to another user, and told to root.
    @Test(.enabled(if: Privileges.isRoot, "needs root: setpriv runs the caller as another uid"))
    func healthShowsOnlyTheInstancesTheCallerMayRead() async throws {
        try await DaemonHarness.with { harness in
            try harness.openUpForOtherUsers()
            try harness.writeInstance("open")
            try harness.writeInstance("secret-place", tokenURL: "http://127.0.0.1:1/token", extra: "[access]\nusers = [0]\n")
            try harness.start()
            try await harness.waitUntilReady()
            let asNobody = try await harness.curlAsync(["http://localhost/v1/health"], as: Self.nobody)
            #expect(asNobody.status == 200, "\(asNobody.body)")
            #expect(!asNobody.body.contains("secret-place"))
            let asRoot = try await harness.curlAsync(["http://localhost/v1/health"])
            #expect(asRoot.status == 503)
            #expect(asRoot.body.contains("secret-place"))
            // A name it may not use and a name that does not exist look the same to that caller.
            let hidden = try await harness.curlAsync(["http://localhost/v1/tokens/secret-place"], as: Self.nobody)
            let missing = try await harness.curlAsync(["http://localhost/v1/tokens/secret-placx"], as: Self.nobody)
            #expect(hidden.status == 404 && missing.status == 404)
            #expect(hidden.body == missing.body.replacingOccurrences(of: "secret-placx", with: "secret-place"))
            #expect(try await harness.stop() == 0)
        }
    }

    /// A `curl -N` watching alpha's stream as `prefix` (setpriv), writing the events to `output`.
    static func watch(_ harness: DaemonHarness, as prefix: [String], output: String) throws -> Process {
        // Made here, writable by the other user (the directory is not).
        FileManager.default.createFile(atPath: output, contents: nil, attributes: [.posixPermissions: 0o666])
        let process = Process()
        let curl = ["/usr/bin/curl", "-sN", "--max-time", "60", "--unix-socket", harness.socketPath, "-o", output]
        let command = prefix + curl + ["http://localhost/v1/tokens/alpha/watch"]
        process.executableURL = URL(fileURLWithPath: prefix.isEmpty ? command[0] : "/usr/bin/setpriv")
        process.arguments = Array(command.dropFirst())
        try process.run()
        return process
    }

    /// How many token events `path` holds.
    static func events(_ path: String) -> Int {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return text.components(separatedBy: "event: token\n").count - 1
    }
}
