import Foundation
import Testing
import TokendTestSupport

/// Tokens as systemd credentials (SPEC §10) under a real systemd: one-shot units with
/// `LoadCredential=billing:/run/tokend/credentials.sock`, served through the shipped `tokend-credentials.socket`.
@Suite(
    .serialized,
    .timeLimit(.minutes(3)),
    SystemdSandbox.required
)
struct SystemdCredentialTests {
    static let access = "[access]\nunits = [\"backup.service\", \"report-*.service\"]\n"

    /// A one-shot unit that copies its credential where the test reads it, and fails when the credential is empty
    /// (what systemd writes when tokend closes without data: systemd issue #27373), with the README's guard.
    static func oneShot(_ name: String) -> String {
        let out = "\(SystemdSandbox.stageInside)/\(name).out"
        return """
            [Unit]
            DefaultDependencies=no
            After=tokend.service

            [Service]
            Type=oneshot
            LoadCredential=billing:/run/tokend/credentials.sock
            ExecStartPre=/bin/sh -c 'cat "$$CREDENTIALS_DIRECTORY/billing" > \(out)'
            # The README's guard: an empty credential (tokend refused) fails the unit.
            ExecStartPre=/usr/bin/test -s %d/billing
            ExecStart=/bin/true

            """
    }

    static let units = [
        "backup.service": oneShot("backup"), "report-daily.service": oneShot("report-daily"), "other.service": oneShot("other"),
    ]

    @Test func aListedUnitAndAGlobbedOneLoadTheTokenAnUnlistedOneFailsAndIsLogged() async throws {
        let system = try await SystemdFixture.boot(units: Self.units)
        try await system.run {
            try system.writeInstance("billing", extra: Self.access)
            try system.sandbox.systemctl("start", "tokend.service")
            let served = try system.curl("/v1/tokens/billing?format=raw")
            #expect(served.status == 200, "\(system.log)")
            try await eventually("tokend took the credentials socket systemd passed") {
                system.log.contains("using the credentials socket systemd passed")
            }

            let backup = try system.sandbox.systemctl("start", "backup.service")
            #expect(backup.status == 0, "\(backup.stderr) \(system.log)")
            #expect(system.sandbox.read(SystemdSandbox.stageInside + "/backup.out") == served.body)

            let report = try system.sandbox.systemctl("start", "report-daily.service")
            #expect(report.status == 0, "\(report.stderr) \(system.log)")
            #expect(system.sandbox.read(SystemdSandbox.stageInside + "/report-daily.out") == served.body, "a glob")

            let other = try system.sandbox.systemctl("start", "other.service")
            #expect(other.status != 0, "a unit not in [access] units started")
            #expect(system.sandbox.read(SystemdSandbox.stageInside + "/other.out") == "", "the unit got a token")
            try await eventually("tokend logs the refusal, naming the unit") {
                system.log.contains("credential refused") && system.log.contains("unit=other.service")
            }
        }
    }

    /// With only the sockets started, a unit's `LoadCredential=` starts tokend, which answers once the first token is
    /// there.
    @Test func loadingACredentialActivatesTokend() async throws {
        let system = try await SystemdFixture.boot(units: Self.units)
        try await system.run {
            try system.writeInstance("billing", extra: Self.access)
            try system.sandbox.systemctl("start", "tokend.socket", "tokend-credentials.socket")
            #expect(try system.sandbox.property("ActiveState", of: "tokend.service") == "inactive")
            let backup = try system.sandbox.systemctl("start", "backup.service")
            #expect(backup.status == 0, "\(backup.stderr) \(system.log)")
            #expect(try system.sandbox.property("ActiveState", of: "tokend.service") == "active")
            let served = try system.curl("/v1/tokens/billing?format=raw")
            #expect(system.sandbox.read(SystemdSandbox.stageInside + "/backup.out") == served.body, "\(system.log)")
        }
    }
}
