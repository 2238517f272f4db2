import Foundation
import Testing
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The shipped `tokend.service` and `tokend.socket` under a real systemd (``SystemdSandbox``): only the binary's
/// path differs, plus a drop-in with the test's credential, a log file, and what a test needs to shorten.
@Suite(
    .serialized,
    .timeLimit(.minutes(3)),
    SystemdSandbox.required
)
struct SystemdServiceTests {
    @Test func startReturnsOnlyAfterReadyAndStatusShowsTheCounts() async throws {
        let system = try await SystemdFixture.boot()
        try await system.run {
            system.endpoint.setResponseDelay(milliseconds: 2000)
            try system.writeInstance("billing")
            let start = try system.sandbox.spawn(["systemctl", "start", "tokend.service"])
            var states: [String] = []
            while start.isRunning {
                states.append(try system.sandbox.property("ActiveState", of: "tokend.service"))
                usleep(100_000)
            }
            let issuedBeforeStartReturned = system.endpoint.issuedTokens
            #expect(start.terminationStatus == 0, "\(system.log)")
            #expect(states.contains("activating"), "states while systemctl start ran: \(states)")
            #expect(issuedBeforeStartReturned.count == 1, "systemctl start returned before the first token")
            #expect(try system.sandbox.property("ActiveState", of: "tokend.service") == "active")

            let status = try system.sandbox.systemctl("status", "--no-pager", "tokend.service")
            #expect(status.stdout.contains("Status: \"1 instance: 1 valid\""), "\(status.stdout)")
            let served = try system.curl("/v1/tokens/billing?format=raw")
            #expect(served.status == 200)
            #expect(served.body == issuedBeforeStartReturned.first)
        }
    }

    @Test func theHardenedUnitRunsAsItsUserWithItsCredentialAndStateDirectory() async throws {
        let system = try await SystemdFixture.boot()
        try await system.run {
            system.endpoint.expectClient(id: "billing", secret: SystemdFixture.secret)
            try system.writeInstance("billing")
            try system.sandbox.systemctl("start", "tokend.service")
            #expect(system.endpoint.issuedTokens.count == 1, "the credential did not reach the endpoint: \(system.log)")

            let mainPID = try system.sandbox.property("MainPID", of: "tokend.service")
            let status = system.sandbox.read("/proc/\(mainPID)/status")
            let uid = try #require(Self.field("Uid", in: status)?.split(separator: "\t").first.flatMap { Int($0) }, "\(status)")
            // The static user tokend.sysusers created (DynamicUser= uses it when it exists).
            let passwd = system.sandbox.read("/etc/passwd").split(separator: "\n").first { $0.hasPrefix("tokend:") }
            let tokendUID = try #require(passwd?.split(separator: ":", omittingEmptySubsequences: false)[2]).description
            #expect("\(uid)" == tokendUID)
            #expect(uid != 0)
            #expect(Self.field("NoNewPrivs", in: status) == "1")
            #expect(Self.field("Seccomp", in: status) == "2")
            #expect(Self.field("CapEff", in: status) == "0000000000000000")
            // No core dumps (issue #18, finding 5): LimitCORE=0, and the process made itself non-dumpable, which
            // the kernel shows by giving the files under its /proc/<pid> to root although it runs as tokend.
            let limits = system.sandbox.read("/proc/\(mainPID)/limits").split(separator: "\n")
            let core = limits.first { $0.hasPrefix("Max core file size") }?.split(separator: " ").map(String.init)
            #expect(core?.dropFirst(4).prefix(2) == ["0", "0"], "\(core ?? [])")
            var procInfo = stat()
            #expect(stat(system.sandbox.root + "/proc/\(mainPID)/environ", &procInfo) == 0)
            #expect(procInfo.st_uid == 0, "/proc/\(mainPID)/environ belongs to uid \(procInfo.st_uid): tokend is dumpable")

            // StateDirectory=: /var/lib/tokend → private/tokend, written by the dynamic user, 0600.
            let cacheFile = system.sandbox.root + "/var/lib/private/tokend/billing.json"
            var info = stat()
            #expect(lstat(cacheFile, &info) == 0, "no cache file in the StateDirectory")
            #expect(Int(info.st_uid) == uid)
            #expect(info.st_mode & 0o777 == 0o600)
            let cached = system.sandbox.read("/var/lib/private/tokend/billing.json")
            #expect(!cached.contains(SystemdFixture.secret), "the client secret reached the cache")

            let served = try system.curl("/v1/tokens/billing?format=raw")
            #expect(served.status == 200)
            #expect(served.body == system.endpoint.issuedTokens.first)
        }
    }

    @Test func reloadAppliesAChangeAndARejectedOneKeepsTheOldConfig() async throws {
        let system = try await SystemdFixture.boot()
        try await system.run {
            try system.writeInstance("billing")
            try system.sandbox.systemctl("start", "tokend.service")
            let pid = try system.sandbox.property("MainPID", of: "tokend.service")

            try system.writeInstance("reports")
            let reload = try system.sandbox.systemctl("reload", "tokend.service")
            #expect(reload.status == 0, "\(reload.stderr) \(system.log)")
            #expect(try system.sandbox.property("ActiveState", of: "tokend.service") == "active")
            #expect(try system.sandbox.property("MainPID", of: "tokend.service") == pid, "reload restarted the daemon")
            let instances = try system.curl("/v1/instances")
            #expect(instances.body.contains("\"reports\""), "\(instances.body)")
            try await eventually("a token for the added instance") { try system.curl("/v1/tokens/reports").status == 200 }

            // ExecReload= runs `tokend check` first: a broken file is refused and the daemon keeps going.
            try system.sandbox.write("/etc/tokend/instances/broken.toml", "token_url = [\n")
            let refused = try system.sandbox.systemctl("reload", "tokend.service")
            #expect(refused.status != 0)
            #expect(try system.sandbox.property("ActiveState", of: "tokend.service") == "active")
            #expect(try system.curl("/v1/tokens/billing").status == 200)
            let afterRefusal = try system.curl("/v1/instances")
            #expect(!afterRefusal.body.contains("\"broken\""), "\(afterRefusal.body)")
        }
    }

    @Test func aStalledSchedulerStopsTheWatchdogPingsAndSystemdRestartsTheUnit() async throws {
        let system = try await SystemdFixture.boot(
            dropIn: """
                WatchdogSec=2s
                RestartSec=200ms
                ExecStart=
                ExecStart=\(SystemdSandbox.stageInside)/bin/tokend run --debug-stall-on-sigusr2
                """
        )
        try await system.run {
            try system.writeInstance("billing")
            try system.sandbox.systemctl("start", "tokend.service")
            let firstPID = try system.sandbox.property("MainPID", of: "tokend.service")
            // Pings from the scheduler queue keep the unit alive past WatchdogSec= (real time is the subject here).
            try await Task.sleep(for: .seconds(3))
            #expect(try system.sandbox.property("NRestarts", of: "tokend.service") == "0", "\(system.log)")
            #expect(try system.sandbox.property("MainPID", of: "tokend.service") == firstPID)

            try system.sandbox.systemctl("kill", "--kill-whom=main", "--signal=SIGUSR2", "tokend.service")
            try await eventually("systemd restarts the unit after the watchdog fired", timeout: 15) {
                try system.sandbox.property("NRestarts", of: "tokend.service") == "1"
                    && system.sandbox.property("ActiveState", of: "tokend.service") == "active"
            }
            #expect(try system.sandbox.property("MainPID", of: "tokend.service") != firstPID)
            #expect(system.log.contains("stalling the scheduler queue"))
            #expect(try system.curl("/v1/tokens/billing").status == 200)
        }
    }

    @Test func stopEndsTheDaemonCleanly() async throws {
        let system = try await SystemdFixture.boot()
        try await system.run {
            try system.writeInstance("billing")
            try system.sandbox.systemctl("start", "tokend.service")
            let stop = try system.sandbox.systemctl("stop", "tokend.service")
            #expect(stop.status == 0)
            #expect(try system.sandbox.property("ActiveState", of: "tokend.service") == "inactive")
            #expect(try system.sandbox.property("Result", of: "tokend.service") == "success")
            #expect(try system.sandbox.property("ExecMainStatus", of: "tokend.service") == "0")
            #expect(system.log.contains("stopped"), "\(system.log)")
        }
    }

    @Test func aFatalStartErrorReachesSystemdAsErrnoAndStatus() async throws {
        let system = try await SystemdFixture.boot()
        try await system.run {
            try system.sandbox.write("/etc/tokend/tokend.toml", "log_level = 7\n")
            let start = try system.sandbox.systemctl("start", "tokend.service")
            #expect(start.status != 0)
            #expect(try system.sandbox.property("StatusErrno", of: "tokend.service") == "\(EINVAL)")
            #expect(try system.sandbox.property("StatusText", of: "tokend.service").hasPrefix("cannot start: "))
        }
    }

    @Test func socketActivationStartsTheServiceOnTheFirstRequest() async throws {
        let system = try await SystemdFixture.boot()
        try await system.run {
            try system.writeInstance("billing")
            try system.sandbox.systemctl("start", "tokend.socket")
            #expect(try system.sandbox.property("ActiveState", of: "tokend.service") == "inactive")
            let group = system.sandbox.read("/etc/group").split(separator: "\n").first { $0.hasPrefix("tokend:") }
            let gid = try #require(group?.split(separator: ":", omittingEmptySubsequences: false)[2]).description
            var info = stat()
            #expect(stat(system.socketPath, &info) == 0)
            #expect("\(info.st_gid)" == gid)
            #expect(info.st_mode & 0o777 == 0o660)

            let served = try system.curl("/v1/tokens/billing?format=raw")
            #expect(served.status == 200, "\(served.body) \(system.log)")
            #expect(served.body == system.endpoint.issuedTokens.first)
            #expect(try system.sandbox.property("ActiveState", of: "tokend.service") == "active")
            #expect(system.log.contains("using the socket systemd passed"), "\(system.log)")
        }
    }

    private static func field(_ name: String, in status: String) -> String? {
        status.split(separator: "\n").first { $0.hasPrefix(name + ":") }
            .map { $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces) }
    }
}

/// A sandboxed systemd with the shipped units, a local token endpoint and helpers to configure tokend.
final class SystemdFixture: @unchecked Sendable {
    static let secret = "sandbox-client-secret"
    let sandbox: SystemdSandbox
    let endpoint: LocalTokenServer

    var socketPath: String { sandbox.root + "/run/tokend/tokend.sock" }
    var log: String { sandbox.read(SystemdSandbox.stageInside + "/tokend.log") }

    private init(sandbox: SystemdSandbox, endpoint: LocalTokenServer) {
        self.sandbox = sandbox
        self.endpoint = endpoint
    }

    /// Boots a sandbox whose `tokend.service` is the shipped one with `ExecStart=` pointing at the test binary,
    /// the client secret as a credential (`LoadCredential=`), and `dropIn` lines added to `[Service]`.
    static func boot(dropIn: String = "", units extraUnits: [String: String] = [:]) async throws -> SystemdFixture {
        let endpoint = LocalTokenServer(lifetime: 3600)
        try await endpoint.start(port: 0)
        let stage = SystemdSandbox.stageInside
        let units = SystemdUnitTests.unitDirectory
        func shipped(_ name: String) throws -> String {
            try String(contentsOfFile: "\(units)/\(name)", encoding: .utf8)
                .replacingOccurrences(of: "/usr/local/bin/tokend", with: "\(stage)/bin/tokend")
                .replacingOccurrences(of: "[Unit]\n", with: "[Unit]\nDefaultDependencies=no\n")
        }
        do {
            let sandbox = try SystemdSandbox.boot(
                units: extraUnits.merging([
                    "test.target": "[Unit]\nDescription=tokend test\nDefaultDependencies=no\n",
                    "tokend.service": try shipped("tokend.service"),
                    "tokend.socket": try shipped("tokend.socket"),
                    "tokend-credentials.socket": try shipped("tokend-credentials.socket"),
                    "tokend.service.d/test.conf": """
                    [Service]
                    LoadCredential=client-secret:/etc/tokend/client-secret
                    StandardOutput=append:\(stage)/tokend.log
                    StandardError=append:\(stage)/tokend.log
                    \(dropIn)

                    """,
                ]) { _, shipped in shipped },
                files: [
                    "bin/tokend": (try Data(contentsOf: URL(fileURLWithPath: try DaemonHarness.binaryPath())), 0o755),
                    "tokend.sysusers": (try Data(contentsOf: URL(fileURLWithPath: "\(units)/tokend.sysusers")), 0o644),
                ]
            )
            let fixture = SystemdFixture(sandbox: sandbox, endpoint: endpoint)
            try sandbox.write("/etc/tokend/client-secret", secret, mode: 0o600)
            // The shipped sysusers.d entry creates the "tokend" user and the socket's group, as on a real host.
            let sysusers = try sandbox.run(["systemd-sysusers", "\(stage)/tokend.sysusers"])
            guard sysusers.status == 0 else {
                await fixture.teardown()
                throw HarnessError("systemd-sysusers failed: \(sysusers.stderr)")
            }
            return fixture
        } catch {
            await endpoint.stop()
            throw error
        }
    }

    /// Runs the test body, then tears everything down (also when the body throws).
    func run(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch {
            await teardown()
            throw error
        }
        await teardown()
    }

    fileprivate func teardown() async {
        // The secrets audit of every daemon run: its log and its StateDirectory= hold neither the client secret nor
        // a whole token (read before the sandbox, and its files, go away).
        let stateDirectory = "/var/lib/private/tokend"
        let stateFiles = ((try? FileManager.default.contentsOfDirectory(atPath: sandbox.root + stateDirectory)) ?? []).map {
            (what: "\(stateDirectory)/\($0)", text: sandbox.read("\(stateDirectory)/\($0)"))
        }
        let leaks = DaemonHarness.leaks(
            secrets: [Self.secret, WireDecoding.formEncode(Self.secret)],
            tokens: Set(endpoint.issuedTokens),
            texts: [("the daemon log", log)],
            stateFiles: stateFiles
        )
        for leak in leaks { Issue.record(Comment(rawValue: leak)) }
        sandbox.shutdown()
        await endpoint.stop()
    }

    /// `instances/<name>.toml` in /etc/tokend, its client secret from the credential.
    func writeInstance(_ name: String, extra: String = "") throws {
        try sandbox.write(
            "/etc/tokend/instances/\(name).toml",
            """
            token_url   = "\(endpoint.tokenURL)"
            client_auth = "client_secret_post"

            [variables]
            client_id     = "\(name)"
            client_secret = { credential = "client-secret" }
            \(extra)
            """
        )
    }

    /// `curl --unix-socket` against the sandbox's socket (through /proc/<pid>/root).
    func curl(_ uri: String) throws -> (status: Int, body: String) {
        let result = try runCommand(
            ["curl", "-s", "--max-time", "20", "--unix-socket", socketPath, "-w", "\n%{http_code}", "http://localhost\(uri)"]
        )
        guard let newline = result.stdout.lastIndex(of: "\n") else { return (0, result.stdout) }
        return (Int(result.stdout[result.stdout.index(after: newline)...]) ?? 0, String(result.stdout[..<newline]))
    }
}
