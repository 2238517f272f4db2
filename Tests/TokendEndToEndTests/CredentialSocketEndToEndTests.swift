import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// credentials.sock (SPEC §10) without systemd: the test binds the abstract address systemd would
/// (`\0<random>/unit/<unit>/<ID>`) before it connects, and reads what tokend writes before it closes.
@Suite(.serialized, .timeLimit(.minutes(3))) struct CredentialSocketEndToEndTests {
    static let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

    @Test func anAllowedUnitGetsTheTokenOthersGetNothingAndTheRefusalIsLogged() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha", extra: "[access]\nunits = [\"backup.service\", \"report-*.service\"]\n")
            try harness.writeInstance("beta", extra: "[access]\nunits = [\"beta.service\"]\n")
            let beta = harness.configDir + "/instances/beta.toml"
            try harness.writeRaw("beta", "credential_id = \"beta-token\"\n" + (try String(contentsOfFile: beta, encoding: .utf8)))
            try harness.writeInstance("open")
            try harness.start()
            try await harness.waitUntilReady()
            let credentials = Self.credentialsPath(harness)
            var info = stat()
            #expect(stat(credentials, &info) == 0 && info.st_mode & 0o777 == 0o600, "credentials.sock is 0600")

            // The test runs as the daemon's uid, an admin: the API socket serves it the same token.
            let alpha = try harness.curl(["http://localhost/v1/tokens/alpha?format=raw"])
            #expect(alpha.status == 200)
            #expect(try Self.load(credentials, unit: "backup.service", id: "alpha") == alpha.body)
            #expect(try Self.load(credentials, unit: "report-daily.service", id: "alpha") == alpha.body, "a glob")

            // The first refusal of a window is logged at once, with its reason; the rest are summed up (RefusalLog).
            #expect(try Self.load(credentials, unit: "other.service", id: "alpha") == "", "a unit not in units")
            try await eventually("the refusal is logged, naming the unit") {
                harness.log.contains("credential refused") && harness.log.contains("unit=other.service")
                    && harness.log.contains("not in the instance's [access] units")
            }

            // credential_id names the instance; its name no longer does.
            let betaToken = try harness.curl(["http://localhost/v1/tokens/beta?format=raw"])
            #expect(betaToken.status == 200)
            #expect(try Self.load(credentials, unit: "beta.service", id: "beta-token") == betaToken.body)
            #expect(try Self.load(credentials, unit: "beta.service", id: "beta") == "")

            #expect(try Self.load(credentials, unit: "report-daily.timer", id: "alpha") == "")
            #expect(try Self.load(credentials, unit: "backup.service", id: "open") == "", "no [access] units: nobody")
            #expect(try Self.load(credentials, unit: "backup.service", id: "missing") == "")
            // Not systemd's address: an unnamed client, or a name of another shape.
            #expect(try Self.load(credentials, bindName: nil) == "")
            #expect(try Self.load(credentials, bindName: "c0ffee/user/backup.service/alpha") == "")
            #expect(harness.log.contains("credential served"))
            #expect(try await harness.stop() == 0)
            #expect(!FileManager.default.fileExists(atPath: credentials), "credentials.sock is removed at stop")
            let summary = harness.log.split(separator: "\n").first { $0.contains("more credentials refused") } ?? ""
            #expect(summary.contains("count=4") && summary.contains("unit report-daily.timer"), "\(harness.log)")
        }
    }

    /// A reload that changes `[access] units` (the token request unchanged, so the instance keeps running) changes
    /// who gets the credential.
    @Test func aReloadChangesWhichUnitsGetTheToken() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("alpha", extra: "[access]\nunits = [\"backup.service\"]\n")
            try harness.start()
            try await harness.waitUntilReady()
            let credentials = Self.credentialsPath(harness)
            #expect(try Self.load(credentials, unit: "report.service", id: "alpha") == "")
            try harness.writeInstance("alpha", extra: "[access]\nunits = [\"report.service\"]\n")
            harness.signal(SIGHUP)
            try await harness.waitUntilReady(count: 2)
            #expect(try Self.load(credentials, unit: "report.service", id: "alpha") == harness.endpoint.issuedTokens.first)
            #expect(try Self.load(credentials, unit: "backup.service", id: "alpha") == "")
            #expect(harness.endpoint.issuedTokens.count == 1, "the reload fetched again")
            #expect(try await harness.stop() == 0)
        }
    }

    /// A unit that asks before the first token is there waits for it (systemd has shut its writing side by then).
    @Test func aRequestDuringStartUpWaitsForTheFirstToken() async throws {
        try await DaemonHarness.with { harness in
            harness.endpoint.setResponseDelay(milliseconds: 1500)
            try harness.writeInstance("alpha", extra: "[access]\nunits = [\"backup.service\"]\n")
            try harness.start()
            let credentials = Self.credentialsPath(harness)
            try await eventually("credentials.sock is bound") { FileManager.default.fileExists(atPath: credentials) }
            let loaded = try Self.load(credentials, unit: "backup.service", id: "alpha")
            #expect(!loaded.isEmpty, "\(harness.log)")
            #expect(loaded == harness.endpoint.issuedTokens.first)
            #expect(try await harness.stop() == 0)
        }
    }

    /// An `[access]` with only `units` lets no socket caller but the admins read the token over the API socket.
    @Test(.enabled(if: Privileges.isRoot, "needs root: setpriv runs the caller as another uid"))
    func aUnitsOnlyAccessRuleServesNoOtherUserOverTheAPISocket() async throws {
        try await DaemonHarness.with { harness in
            try harness.openUpForOtherUsers()
            try harness.writeInstance("alpha", extra: "[access]\nunits = [\"backup.service\"]\n")
            try harness.start()
            try await harness.waitUntilReady()
            #expect(try harness.curl(["http://localhost/v1/tokens/alpha?format=raw"], as: Self.nobody).status == 404)
            #expect(try harness.curl(["http://localhost/v1/tokens/alpha?format=raw"]).status == 200, "root is an admin")
            #expect(try await harness.stop() == 0)
        }
    }

    static func credentialsPath(_ harness: DaemonHarness) -> String {
        URL(fileURLWithPath: harness.socketPath).deletingLastPathComponent().appendingPathComponent("credentials.sock").path
    }

    static func load(_ path: String, unit: String, id: String) throws -> String {
        try load(path, bindName: "\(String(UInt64.random(in: 0...UInt64.max), radix: 16))/unit/\(unit)/\(id)")
    }

    /// What systemd's `read_full_file_full(READ_FULL_FILE_CONNECT_SOCKET)` does: bind `bindName` in the abstract
    /// namespace (nil: stay unnamed), connect, shut the writing side, read to the end.
    static func load(_ path: String, bindName: String?) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if let bindName {
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let name = [UInt8(0)] + Array(bindName.utf8)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: name) }
            let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count)
            let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            guard bound == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        }
        var target = sockaddr_un()
        target.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &target.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let connected = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        shutdown(fd, Int32(SHUT_WR))
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            if count == 0 { break }
            received += buffer[0..<count]
        }
        return String(decoding: received, as: UTF8.self)
    }
}
