import Foundation
import Testing
import TokendTestSupport

@testable import tokend

/// The parser-free `token`/`status`/`refresh` path (issue #21) against ArgumentParser's, with the real binary.
@Suite(.serialized, .timeLimit(.minutes(3))) struct QuickCommandEndToEndTests {
    /// Every argument list gives the same stdout, stderr and exit status with and without the fast path.
    @Test func theFastPathAnswersLikeTheParser() async throws {
        try await DaemonHarness.withRunning("alpha", "beta") { harness in
            let socket = ["--socket", harness.socketPath]
            let missing = harness.root + "/missing.sock"
            let fast: [[String]] = [
                ["token", "alpha"] + socket,
                ["token"] + socket + ["alpha"],
                ["token", "alpha", "--format", "raw"] + socket,
                ["token", "alpha", "--format", "json"] + socket,
                ["token", "--format=header", "alpha", "--socket=\(harness.socketPath)"],
                ["token", "alpha", "--format", "apply"] + socket,
                ["token", "alpha", "--curl-header"] + socket,
                ["token", "alpha", "--curl-header", "--format", "raw"] + socket,
                ["token", "alpha", "--min-valid", "30"] + socket,
                ["token", "alpha", "--min-valid", "007", "--format", "json"] + socket,
                ["token", "alpha", "--min-valid", "3600"] + socket,
                ["token", "nope"] + socket,
                ["token", "a b/c?d"] + socket,
                ["token", "alpha", "--socket", missing],
                ["token", "alpha", "--socket", harness.root],
                ["status"] + socket,
                ["status", "--json"] + socket,
                ["status", "--socket", missing],
                ["refresh", "beta"] + socket,
                ["refresh", "nope"] + socket,
                ["refresh", "beta", "--socket", missing],
            ]
            // Forms the fast path leaves to the parser: help, usage errors, bad values, unknown flags.
            let parsed: [[String]] = [
                ["token"],
                ["token", "alpha", "beta"] + socket,
                ["token", "alpha", "--bogus"] + socket,
                ["token", "alpha", "--format", "xml"] + socket,
                ["token", "alpha", "--format", "header", "--curl-header"] + socket,
                ["token", "alpha", "--min-valid", "soon"] + socket,
                ["token", "alpha", "--min-valid", "-5"] + socket,
                ["token", "alpha", "--format", "raw", "--format", "json"] + socket,
                ["token", "alpha", "--socket"],
                ["token", "--help"],
                ["status", "extra"] + socket,
                ["status", "--json", "--json"] + socket,
                ["refresh"] + socket,
                ["--version"],
            ]
            for arguments in fast { #expect(QuickCommand(arguments) != nil, "\(arguments)") }
            for arguments in parsed { #expect(QuickCommand(arguments) == nil, "\(arguments)") }
            for arguments in fast + parsed {
                try await expectSameAnswers(arguments, harness: harness)
            }
            // TOKEND_SOCKET instead of --socket.
            let viaEnvironment = ["TOKEND_SOCKET=\(harness.socketPath)", try DaemonHarness.binaryPath(), "token", "alpha"]
            let quick = try runCommand(["env"] + viaEnvironment)
            let full = try runCommand(["env", "TOKEND_CLI_FULL_PARSER=1"] + viaEnvironment)
            #expect(quick.status == 0)
            #expect([quick.status, quick.stdout, quick.stderr] as [AnyHashable] == [full.status, full.stdout, full.stderr])
            #expect(try await harness.stop() == 0)
        }
    }

    /// Runs `arguments` both ways; a table that names seconds may tick between the two runs, so it gets three tries.
    private func expectSameAnswers(_ arguments: [String], harness: DaemonHarness) async throws {
        let binary = try DaemonHarness.binaryPath()
        var answers: [[AnyHashable]] = []
        for _ in 0..<3 {
            let quick = try runCommand([binary] + arguments)
            let full = try runCommand(["env", "TOKEND_CLI_FULL_PARSER=1", binary] + arguments)
            answers = [[quick.status, quick.stdout, quick.stderr], [full.status, full.stdout, full.stderr]]
            if answers[0] == answers[1] { break }
        }
        #expect(answers[0] == answers[1], "\(arguments)")
    }
}
