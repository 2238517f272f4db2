import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The cache under crashes and tampering: kill -9 at random moments while 100 instances with 2 s tokens refresh
/// never leaves a cache file that does not parse, and a corrupt, truncated, empty, foreign or symlinked cache file
/// is logged, moved aside and refetched.
@Suite(.serialized, .timeLimit(.minutes(3))) struct CrashSafetyEndToEndTests {
    /// Every `<name>.json` in the state directory: name and bytes.
    static func cacheFiles(_ harness: DaemonHarness) throws -> [(name: String, bytes: [UInt8])] {
        try FileManager.default.contentsOfDirectory(atPath: harness.stateDir).sorted().compactMap { file in
            guard file.hasSuffix(".json"), !file.hasPrefix(".") else { return nil }
            let data = try Data(contentsOf: URL(fileURLWithPath: harness.stateDir + "/" + file))
            return (String(file.dropLast(5)), Array(data))
        }
    }

    static func tempFiles(_ harness: DaemonHarness) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: harness.stateDir)) ?? []).filter { $0.contains(".tmp-") }
    }

    @Test func killNineAtRandomMomentsNeverLeavesABrokenCacheFile() async throws {
        let count = 100
        try await DaemonHarness.with(lifetime: 2) { harness in
            try harness.writeNumberedInstances(count)
            try harness.start()
            try await harness.waitUntilReady(timeout: 30)

            var random = SeededGenerator(seed: 0x7_0CE9)
            var kills = 0
            var tempFilesSeen = 0
            var filesChecked = 0
            for _ in 0..<20 {
                // Some rounds start from a cache whose 2 s tokens have expired (fetches at start-up), some from a warm one.
                try await Task.sleep(for: .milliseconds(Int.random(in: 50...500, using: &random)))
                harness.signal(SIGKILL)
                harness.process?.waitUntilExit()
                kills += 1
                for file in try Self.cacheFiles(harness) {
                    filesChecked += 1
                    #expect(!file.bytes.isEmpty, "\(file.name).json is empty after kill \(kills)")
                    #expect(
                        CacheRecord.decode(file.bytes, instance: file.name) != nil,
                        "\(file.name).json does not parse after kill \(kills): \(file.bytes.count) bytes"
                    )
                }
                tempFilesSeen += Self.tempFiles(harness).count
                try harness.start()
            }
            // A temp file a crash left behind, holding a perfectly good record, is never read as the token.
            let planted = CacheRecord(
                instance: "i0",
                token: IssuedToken(
                    accessToken: Secret("planted-temp-token"),
                    tokenType: "Bearer",
                    scope: nil,
                    obtainedAt: Date(),
                    expiresAt: Date().addingTimeInterval(600)
                ),
                fingerprint: "whatever"
            )
            harness.signal(SIGKILL)
            harness.process?.waitUntilExit()
            try Data(planted.encoded()).write(to: URL(fileURLWithPath: harness.stateDir + "/.i0.json.tmp-1-2"))
            try harness.start()
            try await harness.waitUntilReady(count: 2, timeout: 30)
            try await eventually("every instance has a token after the last restart", timeout: 20) {
                try await harness.get("/v1/health").status == 200
            }
            for index in 0..<count {
                let token = try await harness.token("i\(index)")
                #expect(token != nil && token != "planted-temp-token", "i\(index)")
            }
            #expect(!FileManager.default.fileExists(atPath: harness.stateDir + "/.i0.json.tmp-1-2"), "a crash's temp file survived a start")
            let corrupt = try FileManager.default.contentsOfDirectory(atPath: harness.stateDir).filter { $0.hasSuffix(".corrupt") }
            #expect(corrupt.isEmpty, "moved aside after crashes: \(corrupt)")
            #expect(!harness.log.contains("cache file moved aside"))
            #expect(filesChecked > count, "only \(filesChecked) cache files were checked")
            #expect(try await harness.stop() == 0)
            // The running daemon writes temp files all the time (2 s tokens); a clean stop leaves none.
            #expect(Self.tempFiles(harness).isEmpty, "temp files after a clean stop: \(Self.tempFiles(harness))")
            print(
                "kill -9 loop: \(kills) kills, \(filesChecked) cache files checked, \(tempFilesSeen) temp files seen, \(harness.endpoint.requestCount) token requests"
            )
        }
    }

    @Test func brokenCacheFilesAreMovedAsideAndRefetched() async throws {
        let broken = ["garbage", "truncated", "empty", "foreign", "other-instance", "far-future", "symlink", "directory"]
        try await DaemonHarness.with(lifetime: 3600) { harness in
            for name in broken + ["good"] { try harness.writeInstance(name) }
            try harness.start()
            try await harness.waitUntilReady()
            var before: [String: String] = [:]
            for name in broken + ["good"] {
                let token: String = try #require(try await harness.token(name))
                before[name] = token
            }
            #expect(try await harness.stop() == 0)

            let state = harness.stateDir
            @Sendable func path(_ name: String) -> String { "\(state)/\(name).json" }
            let goodBytes = try Data(contentsOf: URL(fileURLWithPath: path("good")))
            try Data((0..<512).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }).write(to: URL(fileURLWithPath: path("garbage")))
            let whole = try Data(contentsOf: URL(fileURLWithPath: path("truncated")))
            try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: path("truncated")))
            try Data().write(to: URL(fileURLWithPath: path("empty")))
            try Data(#"{"hello":"world","access_token":"foreign-token"}"#.utf8).write(to: URL(fileURLWithPath: path("foreign")))
            try goodBytes.write(to: URL(fileURLWithPath: path("other-instance")))
            var farFuture = try #require(
                CacheRecord.decode(Array(try Data(contentsOf: URL(fileURLWithPath: path("far-future")))), instance: "far-future")
            )
            farFuture.expires_at = 1e300
            try Data(farFuture.encoded()).write(to: URL(fileURLWithPath: path("far-future")))
            // A symlink to a file elsewhere that holds a valid record: never read, never written through.
            let target = harness.root + "/elsewhere.json"
            try FileManager.default.moveItem(atPath: path("symlink"), toPath: target)
            let targetBytes = try Data(contentsOf: URL(fileURLWithPath: target))
            try FileManager.default.createSymbolicLink(atPath: path("symlink"), withDestinationPath: target)
            try FileManager.default.removeItem(atPath: path("directory"))
            try FileManager.default.createDirectory(atPath: path("directory"), withIntermediateDirectories: false)
            let requestsBefore = harness.endpoint.requestCount

            try harness.start()
            try await harness.waitUntilReady(count: 2)
            #expect(harness.process?.isRunning == true)
            #expect(try await harness.token("good") == before["good"])
            for name in broken {
                let token = try await harness.token(name)
                #expect(token != nil && token != before[name], "\(name): \(String(describing: token))")
                #expect(
                    harness.log.contains("cache file moved aside") && harness.log.contains("instance=\(name) reason="),
                    "\(name): no log line"
                )
                // lstat: the moved-aside symlink is there as a symlink (whatever it points to).
                var moved = stat()
                #expect(lstat(path(name) + ".corrupt", &moved) == 0, "\(name): not moved aside")
                // The refetched token is cached again, as a regular file.
                try await eventually("\(name) is cached again") {
                    CacheRecord.decode(Array((try? Data(contentsOf: URL(fileURLWithPath: path(name)))) ?? Data()), instance: name) != nil
                }
            }
            #expect(harness.endpoint.requestCount == requestsBefore + broken.count)
            var info = stat()
            #expect(lstat(path("symlink"), &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG)
            #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == targetBytes, "the symlink's target was written through")
            #expect(try await harness.stop() == 0)
        }
    }
}
