import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// What a local user could do to the daemon through the files and the process it leaves on the host (issue #18,
/// findings 4, 5 and the state directory and provider-body parts of 9), each tried against the real binary.
@Suite(.serialized, .timeLimit(.minutes(3))) struct HostHardeningEndToEndTests {
    /// Finding 4: a sink directory swapped for a symbolic link is refused, for writes and removals alike.
    ///
    /// With the sink directory in a directory anyone may add to, a local user swaps it for a symlink to a directory
    /// holding a private file of the same name. The next refresh must not overwrite that file, nor an invalidation
    /// unlink it; the log says why the sink was refused.
    @Test func aSinkDirectorySwappedForASymlinkIsRefusedAndTheFileBehindItSurvives() async throws {
        try await DaemonHarness.with(lifetime: 3) { harness in
            let shared = harness.root + "/shared"
            let sinks = shared + "/sinks"
            let victim = harness.root + "/victim"
            try FileManager.default.createDirectory(atPath: sinks, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: victim, withIntermediateDirectories: true)
            #expect(chmod(shared, 0o1777) == 0)
            #expect(chmod(sinks, 0o755) == 0)
            try "precious".write(toFile: victim + "/alpha.token", atomically: false, encoding: .utf8)
            #expect(chmod(victim + "/alpha.token", 0o600) == 0)
            @Sendable func victimText() -> String? { try? String(contentsOfFile: victim + "/alpha.token", encoding: .utf8) }

            try harness.writeInstance("alpha", extra: "[sink]\npath = \"\(sinks)/alpha.token\"\n")
            try harness.start()
            try await harness.waitUntilReady()
            let first = try #require(try await harness.token("alpha"))
            try await eventually("the sink holds the token") {
                (try? String(contentsOfFile: sinks + "/alpha.token", encoding: .utf8)) == first
            }

            // The swap, as the local user would do it in `shared`.
            try FileManager.default.moveItem(atPath: sinks, toPath: shared + "/sinks.old")
            try FileManager.default.createSymbolicLink(atPath: sinks, withDestinationPath: victim)
            // The 3 s token is refreshed about 2 s after it was issued, and written to the sink.
            try await eventually("the refreshed token's sink write", timeout: 15) {
                victimText() != "precious" || harness.log.contains("sink write failed")
            }
            #expect(victimText() == "precious", "the refresh wrote through the symlink")
            let refusal = harness.log.split(separator: "\n").first { $0.contains("sink write failed") } ?? ""
            #expect(refusal.contains("symbolic link"), "\(refusal)")

            // An invalidation drops the token and removes its sink file.
            // (Accepted at most once per min_interval, 1 s, after a fetch started: asked until it is taken.)
            try await eventually("an accepted invalidation") {
                guard let current = try await harness.token("alpha") else { return false }
                let invalidated = try await harness.curlAsync([
                    "-X", "POST", "-d", #"{"fingerprint":"\#(TokenFingerprint.of(Secret(current)))"}"#,
                    "http://localhost/v1/tokens/alpha/invalidate",
                ])
                return invalidated.status == 202
            }
            try await eventually("the invalidation's sink removal") {
                victimText() == nil || harness.log.contains("sink removal failed")
            }
            #expect(victimText() == "precious", "the invalidation unlinked through the symlink")
            #expect(try FileManager.default.contentsOfDirectory(atPath: victim) == ["alpha.token"])
            #expect(try await harness.stop() == 0)
        }
    }

    /// Finding 9: a state directory that another user may write stops the start.
    ///
    /// It could hold a cache record planted for the daemon to serve; the daemon refuses to start and says why (log and
    /// `STATUS=`), where it used to tighten the mode and carry on.
    @Test func aStateDirectoryOthersMayWriteStopsTheStart() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha")
            try FileManager.default.createDirectory(atPath: harness.stateDir, withIntermediateDirectories: false)
            #expect(chmod(harness.stateDir, 0o777) == 0)
            try harness.start()
            try await Self.expectRefusedStart(harness, saying: "is writable by others")
        }
    }

    @Test(.enabled(if: Privileges.isRoot, "needs root: gives the state directory to another uid"))
    func aStateDirectoryOwnedBySomeoneElseStopsTheStart() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha")
            try FileManager.default.createDirectory(atPath: harness.stateDir, withIntermediateDirectories: false)
            #expect(chmod(harness.stateDir, 0o700) == 0)
            #expect(chown(harness.stateDir, 4242, 4242) == 0)
            try harness.start()
            try await Self.expectRefusedStart(harness, saying: "owned by uid 4242")
        }
    }

    static func expectRefusedStart(_ harness: DaemonHarness, saying reason: String) async throws {
        let process = try #require(harness.process)
        try await eventually("tokend refuses to start") { !process.isRunning }
        #expect(process.terminationStatus == 1)
        #expect(harness.log.contains("cannot start"), "\(harness.log)")
        #expect(harness.log.contains(reason), "\(harness.log)")
        let status = harness.notify.assignments.first { $0.hasPrefix("STATUS=") } ?? ""
        #expect(status.hasPrefix("STATUS=cannot start: state directory"), "\(status)")
        #expect(status.contains(reason), "\(status)")
        #expect(harness.endpoint.requestCount == 0)
    }

    /// Finding 5: the daemon makes itself non-dumpable.
    ///
    /// Then a watchdog SIGABRT cannot put its secrets in a core dump. Seen from outside: the kernel gives the files
    /// under a non-dumpable process's `/proc/<pid>` (not the directory itself) to root, whatever uid the process runs
    /// as. The daemon must then run as a uid other than root: as root the test runs it as 65534.
    @Test func theDaemonIsNotDumpable() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha")
            var wrapper: [String] = []
            if Privileges.isRoot {
                // The daemon as uid 65534: it needs its tree (config, state, socket, notify socket) for its own.
                let tree = try FileManager.default.subpathsOfDirectory(atPath: harness.root).map { harness.root + "/" + $0 }
                for path in [harness.root] + tree { #expect(lchown(path, 65534, 65534) == 0, "\(path)") }
                wrapper = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            }
            try harness.start(wrappedIn: wrapper)
            try await harness.waitUntilReady()
            let pid = try #require(harness.process?.processIdentifier)
            let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            let uidLine = status.split(separator: "\n").first { $0.hasPrefix("Uid:") } ?? ""
            let uid = uidLine.split(separator: "\t").dropFirst().first.flatMap { UInt32($0) }
            #expect(uid != nil && uid != 0, "the daemon runs as root: \(uidLine)")
            var info = stat()
            #expect(stat("/proc/\(pid)/environ", &info) == 0)
            #expect(info.st_uid == 0, "/proc/\(pid)/environ belongs to uid \(info.st_uid): the daemon is dumpable")
            if !Privileges.isRoot {
                // Without CAP_SYS_PTRACE, the daemon's own user cannot read its memory or environment.
                #expect(open("/proc/\(pid)/environ", O_RDONLY) < 0)
            }
            #expect(try await harness.token("alpha") != nil)
            #expect(try await harness.stop() == 0)
        }
    }

    /// Finding 9: no byte of a 2xx body that is not a JSON object reaches the log, `/v1/instances` or `tokend status`.
    ///
    /// Here the provider answers 200 form-encoded, with the token in it.
    @Test func aNonJSONSuccessNeverReachesTheLogOrTheAPI() async throws {
        try await DaemonHarness.with { harness in
            let token = "tok-FORM-ENCODED-0123456789abcdef"
            harness.audit(secret: token)
            harness.endpoint.setBehavior(
                .respond(
                    status: 200,
                    headers: [.init("Content-Type", "application/x-www-form-urlencoded")],
                    body: "access_token=\(token)&token_type=bearer&expires_in=3600"
                )
            )
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            try await eventually("the failed fetch is logged") { harness.log.contains("token fetch failed") }
            let instances = try await harness.get("/v1/instances")
            #expect(instances.body.contains("invalid_response"), "\(instances.body)")
            #expect(instances.body.contains("form-encoded"), "\(instances.body)")
            let status = try harness.runCLI(["status", "--socket", harness.socketPath])
            for (what, text) in [("the log", harness.log), ("/v1/instances", instances.body), ("tokend status", status.stdout)] {
                #expect(!text.contains("FORM-ENCODED"), "\(what) holds the token: \(text)")
                #expect(!text.contains("0123456789abcdef"), "\(what) holds the token: \(text)")
            }
            #expect(try await harness.stop() == 0)
        }
    }
}
