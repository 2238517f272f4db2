import Foundation
import Testing
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The parts of the systemd contract a fake notify socket can show: `ERRNO=` on a fatal start and the journald
/// log format.
@Suite(.serialized, .timeLimit(.minutes(3))) struct NotifyAndLogEndToEndTests {
    @Test func aMissingConfigDirectoryEndsTheStartWithErrnoAndStatus() async throws {
        try await DaemonHarness.with { harness in
            try FileManager.default.removeItem(atPath: harness.configDir)
            try harness.start()
            try await Self.expectFatalStart(harness, errno: ENOENT, status: "STATUS=cannot start: \(harness.configDir)")
        }
    }

    @Test func aSocketThatCannotBeBoundEndsTheStartWithErrno() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha")
            // The socket's directory is a regular file.
            let blocker = harness.root + "/not-a-directory"
            _ = FileManager.default.createFile(atPath: blocker, contents: Data())
            try harness.start(socket: blocker + "/tokend.sock")
            try await Self.expectFatalStart(
                harness,
                errno: ENOTDIR,
                status: "STATUS=cannot start: socket: \(blocker)/tokend.sock: bind failed: Not a directory"
            )
        }
    }

    /// tokend exits 1 after sending `STATUS=` (starting with `status`) and `ERRNO=errno`, never `READY=1`.
    private static func expectFatalStart(_ harness: DaemonHarness, errno: Int32, status: String) async throws {
        try await eventually("tokend exits") { harness.process?.isRunning == false }
        #expect(harness.process?.terminationStatus == 1)
        try await eventually("ERRNO= arrives") { harness.notify.assignments.contains { $0.hasPrefix("ERRNO=") } }
        let assignments = harness.notify.assignments
        #expect(assignments.contains("ERRNO=\(errno)"), "\(assignments)")
        #expect(assignments.contains { $0.hasPrefix(status) }, "\(assignments)")
        #expect(!assignments.contains("READY=1"))
    }

    @Test func aRejectedReloadStillEndsWithReadyAndAStatusSayingWhy() async throws {
        try await DaemonHarness.withRunning("alpha") { harness in
            try "log_level = 7\n".write(toFile: harness.configDir + "/tokend.toml", atomically: true, encoding: .utf8)
            harness.signal(SIGHUP)
            try await harness.waitUntilReady(count: 2)
            let assignments = harness.notify.assignments
            let reloading = try #require(assignments.firstIndex(of: "RELOADING=1"))
            #expect(assignments[reloading + 1].hasPrefix("MONOTONIC_USEC="))
            let ready = try #require(assignments.indices.last { assignments[$0] == "READY=1" })
            #expect(reloading < ready)
            #expect(
                assignments[ready + 1] == "STATUS=1 instance: 1 valid; reload rejected: tokend.toml is invalid",
                "\(assignments)"
            )
            #expect(try await harness.token("alpha") != nil, "the old config no longer serves")
        }
    }

    @Test func journalPrioritiesOnlyWhenJournalStreamNamesStderr() async throws {
        // Without JOURNAL_STREAM: readable lines with a timestamp and the level.
        try await DaemonHarness.withRunning("alpha") { plain in
            #expect(try await plain.stop() == 0)
            let plainLines = plain.log.split(separator: "\n")
            #expect(!plainLines.isEmpty)
            #expect(plainLines.allSatisfy { !$0.hasPrefix("<") }, "\(plainLines)")
            #expect(plainLines.contains { $0.contains(" INFO token refreshed") && $0.contains("instance=alpha") }, "\(plainLines)")
            // Start-up: one line for all instances (each one's own is debug), and READY=1 with each step's time.
            #expect(plainLines.contains { $0.contains(" INFO instances started cached_tokens=0 instances=1") }, "\(plainLines)")
            #expect(!plainLines.contains { $0.contains("instance added") }, "\(plainLines)")
            let ready = try #require(plainLines.first { $0.contains(" INFO ready ") }, "\(plainLines)")
            for step in ["config_ms=", "init_ms=", "cache_ms=", "socket_ms=", "apply_ms=", "trim_ms=", "status=\"1 instance: 1 valid\""] {
                #expect(ready.contains(step), "\(ready)")
            }
        }

        // With JOURNAL_STREAM naming the log file (what stderr is): `<N>` on every line.
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha")
            try harness.writeRaw("broken", "token_url = 42\n")
            _ = FileManager.default.createFile(atPath: harness.logPath, contents: Data())
            var info = stat()
            #expect(stat(harness.logPath, &info) == 0)
            try harness.start(environment: ["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino)"])
            try await harness.waitUntilReady()
            #expect(try await harness.stop() == 0)
            let lines = harness.log.split(separator: "\n")
            #expect(lines.allSatisfy { $0.range(of: #"^<[0-7]>"#, options: .regularExpression) != nil }, "\(lines)")
            #expect(lines.contains { $0.hasPrefix("<6>token refreshed") && $0.contains("instance=alpha") }, "\(lines)")
            #expect(lines.contains { $0.hasPrefix("<3>config error") && $0.contains("broken.toml") }, "\(lines)")
        }
    }
}
