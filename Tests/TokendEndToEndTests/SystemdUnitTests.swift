import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The shipped unit files and `make install`, checked with systemd's own tools.
@Suite(.serialized, .timeLimit(.minutes(3))) struct SystemdUnitTests {
    static var packageDirectory: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }

    static var unitDirectory: String { packageDirectory + "/systemd" }

    @Test func serviceIsRatedAtMostOnePointFive() throws {
        // --threshold=15 makes systemd-analyze fail above an exposure of 1.5.
        let result = try runCommand([
            "systemd-analyze", "security", "--offline=yes", "--threshold=15", Self.unitDirectory + "/tokend.service",
        ])
        let line = try #require(result.stdout.split(separator: "\n").last { $0.contains("Overall exposure level") }, "\(result)")
        let score = try #require(line.split(separator: " ").compactMap { Double($0) }.first, "\(line)")
        #expect(score <= 1.5, "\(line)")
        #expect(result.status == 0, "\(result.stderr)")
    }

    /// No core dumps (issue #18, finding 5): the unit sets `LimitCORE=0`.
    ///
    /// A watchdog or stop timeout sends SIGABRT, and a dump would keep client secrets and tokens. The daemon also makes
    /// itself non-dumpable; `SystemdServiceTests` sees both on the running unit.
    @Test func serviceAllowsNoCoreDumps() throws {
        let service = try String(contentsOfFile: Self.unitDirectory + "/tokend.service", encoding: .utf8)
        let limits = service.split(separator: "\n").filter { $0.hasPrefix("LimitCORE=") }
        #expect(limits == ["LimitCORE=0"], "\(limits)")
    }

    /// `make install-files` into a prefix that is its own root (no DESTDIR), so that ExecStart= points at a real
    /// binary and Documentation=man:tokend(8) at a real page; then `systemd-analyze verify` must print nothing.
    @Test func installedUnitsVerifyWithoutAWord() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.makeInstall(["PREFIX=\(root)/usr", "SYSCONFDIR=\(root)/etc"])
        let units = "\(root)/usr/lib/systemd/system"
        let service = try String(contentsOfFile: units + "/tokend.service", encoding: .utf8)
        #expect(service.contains("ExecStart=\(root)/usr/bin/tokend run"))
        #expect(!service.contains("/usr/local/"), "a path the install did not rewrite")

        let verify = try runCommand([
            "/usr/bin/env", "MANPATH=\(root)/usr/share/man",
            "systemd-analyze", "verify", units + "/tokend.service", units + "/tokend.socket", units + "/tokend-credentials.socket",
        ])
        #expect(verify.status == 0)
        #expect(verify.stderr.isEmpty, "systemd-analyze verify: \(verify.stderr)")
        #expect(verify.stdout.isEmpty, "systemd-analyze verify: \(verify.stdout)")
    }

    @Test func makeInstallPutsEveryFileInItsFHSPlaceUnderDestdir() throws {
        let destdir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: destdir) }
        try Self.makeInstall(["DESTDIR=\(destdir)", "PREFIX=/usr"])
        let expected: [(String, Int)] = [
            ("/usr/bin/tokend", 0o755),
            ("/usr/lib/systemd/system/tokend.service", 0o644),
            ("/usr/lib/systemd/system/tokend.socket", 0o644),
            ("/usr/lib/systemd/system/tokend-credentials.socket", 0o644),
            ("/usr/lib/sysusers.d/tokend.conf", 0o644),
            ("/usr/lib/tmpfiles.d/tokend.conf", 0o644),
            ("/usr/share/man/man8/tokend.8", 0o644),
            ("/usr/share/doc/tokend/README.md", 0o644),
            ("/usr/share/doc/tokend/examples/connectors/local-idp.toml", 0o644),
            ("/etc/tokend/tokend.toml", 0o644),
        ]
        for (path, mode) in expected {
            var info = stat()
            #expect(stat(destdir + path, &info) == 0, "\(path) not installed")
            #expect(Int(info.st_mode & 0o7777) == mode, "\(path): mode \(String(info.st_mode & 0o7777, radix: 8))")
        }
        let service = try String(contentsOfFile: destdir + "/usr/lib/systemd/system/tokend.service", encoding: .utf8)
        #expect(service.contains("ExecStart=/usr/bin/tokend run"))
        #expect(service.contains("ExecReload=/usr/bin/tokend check --skip-credentials"))

        // The sysusers.d and tmpfiles.d entries, applied to that root by systemd's own tools.
        let sysusers = try runCommand(["systemd-sysusers", "--root=\(destdir)", destdir + "/usr/lib/sysusers.d/tokend.conf"])
        #expect(sysusers.status == 0, "\(sysusers.stderr)")
        let passwd = try String(contentsOfFile: destdir + "/etc/passwd", encoding: .utf8)
        let group = try String(contentsOfFile: destdir + "/etc/group", encoding: .utf8)
        #expect(passwd.split(separator: "\n").contains { $0.hasPrefix("tokend:") }, "\(passwd)")
        #expect(group.split(separator: "\n").contains { $0.hasPrefix("tokend:") }, "\(group)")

        // The man page renders without a warning.
        let man = try runCommand(["man", "--warnings", "-l", destdir + "/usr/share/man/man8/tokend.8"])
        #expect(man.status == 0)
        #expect(man.stderr.isEmpty, "\(man.stderr)")
        #expect(man.stdout.contains("tokend"))

        // A second install keeps the operator's tokend.toml.
        try "log_level = \"debug\"\n".write(toFile: destdir + "/etc/tokend/tokend.toml", atomically: true, encoding: .utf8)
        try Self.makeInstall(["DESTDIR=\(destdir)", "PREFIX=/usr"])
        #expect(try String(contentsOfFile: destdir + "/etc/tokend/tokend.toml", encoding: .utf8) == "log_level = \"debug\"\n")
    }

    /// The tmpfiles.d entry, applied to an installed root by systemd's own tool, makes the config directories
    /// (root-owned, so only root can apply it).
    @Test(.enabled(if: getuid() == 0, "needs root: systemd-tmpfiles gives the directories to root"))
    func theTmpfilesEntryMakesTheConfigDirectories() throws {
        let destdir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: destdir) }
        try Self.makeInstall(["DESTDIR=\(destdir)", "PREFIX=/usr"])
        try FileManager.default.removeItem(atPath: destdir + "/etc/tokend/instances")
        let tmpfiles = try runCommand(["systemd-tmpfiles", "--root=\(destdir)", "--create", destdir + "/usr/lib/tmpfiles.d/tokend.conf"])
        #expect(tmpfiles.status == 0, "\(tmpfiles.stderr)")
        for directory in ["/etc/tokend", "/etc/tokend/connectors", "/etc/tokend/instances"] {
            var info = stat()
            #expect(lstat(destdir + directory, &info) == 0, "\(directory) missing")
            #expect(info.st_mode & S_IFMT == S_IFDIR && info.st_mode & 0o7777 == 0o755 && info.st_uid == 0, "\(directory)")
        }
    }

    /// The installed /etc/tokend/tokend.toml lists the defaults commented out; uncommented, it must still be valid.
    @Test func theShippedSettingsFileIsValidWithEveryLineUncommented() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let shipped = try String(contentsOfFile: Self.unitDirectory + "/tokend.toml", encoding: .utf8)
        let uncommented = shipped.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasPrefix("# ") && line.dropFirst(2).first.map({ $0.isLetter || $0 == "[" }) == true
                && (line.contains("=") || line.hasPrefix("# [")) ? String(line.dropFirst(2)) : String(line)
        }.joined(separator: "\n")
        #expect(uncommented.contains("\n[refresh]\n"))
        try uncommented.write(toFile: directory + "/tokend.toml", atomically: true, encoding: .utf8)
        let check = try runCommand([try DaemonHarness.binaryPath(), "check", "--config-dir", directory])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("0 error(s), 0 warning(s)"), "\(check.stdout)")
    }

    private static func makeInstall(_ variables: [String]) throws {
        let result = try runCommand(
            ["make", "-C", packageDirectory, "install-files", "BIN=\(try DaemonHarness.binaryPath())"] + variables
        )
        guard result.status == 0 else { throw HarnessError("make install-files failed: \(result.stderr)") }
    }

    private static func temporaryDirectory() throws -> String {
        var template = Array("/tmp/tokend-install-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw POSIXError(.EIO) }
        return String(cString: made)
    }
}
