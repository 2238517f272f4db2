import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Where dpkg-deb is, if anywhere (outside the suite: its own trait cannot name a member of it).
private let dpkgDebPath: String? = ["/usr/bin/dpkg-deb", "/bin/dpkg-deb"].first { access($0, X_OK) == 0 }

/// `make deb` (issue #21): the package built from the debug binary, checked with Debian's own tools — lintian,
/// `dpkg-deb`, `dpkg --root` — and systemd's.
@Suite(
    .serialized,
    .timeLimit(.minutes(5)),
    // dpkg-deb is what builds the package; without it (not a Debian-like host) there is nothing to check.
    .enabled(if: dpkgDebPath != nil, "skipped: dpkg-deb is missing (apt-get install dpkg-dev)")
)
struct DebianPackageTests {
    /// The package, built once for the suite.
    struct Package {
        let path: String
        let version: String
        let directory: String
    }

    /// `make deb` with the debug binary `swift build` made (no release build in CI), into `.build/deb-test/`
    /// (replaced on each run, so that nothing piles up in /tmp).
    ///
    /// Gzip at level 1 instead of xz: the same package, 40 times quicker to compress a debug binary.
    static let built: Result<Package, HarnessError> = {
        do {
            let directory = SystemdUnitTests.packageDirectory + "/.build/deb-test"
            try? FileManager.default.removeItem(atPath: directory)
            let make = try runCommand(
                [
                    "make", "--no-print-directory", "-C", SystemdUnitTests.packageDirectory, "deb", "BIN=\(try DaemonHarness.binaryPath())",
                    "DEBDIR=\(directory)", "DEB_COMPRESS=-Zgzip -z1",
                ],
                timeout: 240
            )
            guard make.status == 0 else { return .failure(HarnessError("make deb failed: \(make.stdout)\(make.stderr)")) }
            let path = make.stdout.split(separator: "\n").last.map(String.init) ?? ""
            let version = try runCommand([try DaemonHarness.binaryPath(), "--version"]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            return .success(Package(path: path, version: version, directory: directory))
        } catch {
            return .failure(HarnessError("make deb: \(error)"))
        }
    }()

    static var architecture: String {
        (try? runCommand(["dpkg", "--print-architecture"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? "?"
    }

    @Test func makeDebNamesThePackageAfterTheVersionAndArchitecture() throws {
        let package = try Self.built.get()
        #expect(package.path == "\(package.directory)/tokend_\(package.version)-1_\(Self.architecture).deb")
        #expect(FileManager.default.fileExists(atPath: package.path))
        let fields = try runCommand(["dpkg-deb", "--field", package.path, "Package", "Version", "Architecture", "Depends"])
        #expect(fields.status == 0, "\(fields.stderr)")
        let lines = fields.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("Package: tokend"), "\(lines)")
        #expect(lines.contains("Version: \(package.version)-1"), "\(lines)")
        #expect(lines.contains("Architecture: \(Self.architecture)"), "\(lines)")
        // Computed by dpkg-shlibdeps from the binary's NEEDED entries: libsystemd (sd_notify) and glibc at least.
        let depends = try #require(lines.first { $0.hasPrefix("Depends: ") }, "\(lines)")
        for needed in ["libc6 (>= ", "libsystemd0", "systemd (>= 248) | systemd-sysusers"] {
            #expect(depends.contains(needed), "\(depends)")
        }
    }

    /// lintian (Debian's policy checker) finds no error.
    ///
    /// One tag is suppressed because of what the test packages, not the package: the debug binary's RUNPATH points
    /// into the Swift toolchain (`custom-library-search-path`); the release binary's is `$ORIGIN` only.
    @Test func lintianReportsNoErrors() throws {
        let package = try Self.built.get()
        let lintian = try runCommand(["lintian", "--suppress-tags", "custom-library-search-path", package.path], timeout: 180)
        let errors = lintian.stdout.split(separator: "\n").filter { $0.hasPrefix("E: ") }
        #expect(errors.isEmpty, "lintian:\n\(errors.joined(separator: "\n"))")
        #expect(lintian.status == 0, "lintian exited with \(lintian.status): \(lintian.stdout)\(lintian.stderr)")
    }

    /// Every file where Debian expects it, with its mode, owned by root; `/etc/tokend/tokend.toml` a conffile.
    @Test func theContentsHaveEveryFileWithItsModeAndTheSettingsAsAConffile() throws {
        let package = try Self.built.get()
        let listing = try runCommand(["dpkg-deb", "--contents", package.path])
        #expect(listing.status == 0, "\(listing.stderr)")
        // "-rw-r--r-- root/root   1445 2026-12-03 18:22 ./etc/tokend/tokend.toml"
        var entries: [String: (mode: String, owner: String)] = [:]
        for line in listing.stdout.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6 else { continue }
            entries[String(fields[5].dropFirst())] = (String(fields[0]), String(fields[1]))
        }
        let expected: [(String, String)] = [
            ("/usr/bin/tokend", "-rwxr-xr-x"),
            ("/usr/lib/systemd/system/tokend.service", "-rw-r--r--"),
            ("/usr/lib/systemd/system/tokend.socket", "-rw-r--r--"),
            ("/usr/lib/systemd/system/tokend-credentials.socket", "-rw-r--r--"),
            ("/usr/lib/sysusers.d/tokend.conf", "-rw-r--r--"),
            ("/usr/lib/tmpfiles.d/tokend.conf", "-rw-r--r--"),
            ("/usr/share/man/man8/tokend.8.gz", "-rw-r--r--"),
            ("/usr/share/doc/tokend/README.md", "-rw-r--r--"),
            ("/usr/share/doc/tokend/copyright", "-rw-r--r--"),
            ("/usr/share/doc/tokend/changelog.Debian.gz", "-rw-r--r--"),
            ("/usr/share/doc/tokend/examples/tokend.toml", "-rw-r--r--"),
            ("/usr/share/doc/tokend/examples/connectors/local-idp.toml", "-rw-r--r--"),
            ("/usr/share/doc/tokend/examples/instances/billing.toml", "-rw-r--r--"),
            ("/usr/share/lintian/overrides/tokend", "-rw-r--r--"),
            ("/etc/tokend/tokend.toml", "-rw-r--r--"),
            ("/etc/tokend/connectors/", "drwxr-xr-x"),
            ("/etc/tokend/instances/", "drwxr-xr-x"),
        ]
        for (path, mode) in expected {
            let entry = entries[path]
            #expect(entry?.mode == mode, "\(path): \(entry.map { "\($0.mode)" } ?? "missing") in\n\(listing.stdout)")
        }
        let foreign = entries.filter { $0.value.owner != "root/root" }
        #expect(foreign.isEmpty, "not owned by root: \(foreign.keys.sorted())")
        #expect(entries["/usr/share/man/man8/tokend.8"] == nil, "the man page is not compressed")
        #expect(!entries.keys.contains { $0.hasPrefix("/usr/local/") || $0.hasPrefix("/DEBIAN") }, "\(entries.keys.sorted())")

        let conffiles = try runCommand(["dpkg-deb", "--info", package.path, "conffiles"])
        #expect(conffiles.status == 0, "no conffiles in the package: \(conffiles.stderr)")
        #expect(conffiles.stdout == "/etc/tokend/tokend.toml\n", "conffiles: \(conffiles.stdout)")
        let copyright = try runCommand([
            "sh", "-c", "dpkg-deb --fsys-tarfile \"$1\" | tar -xOf - ./usr/share/doc/tokend/copyright", "sh", package.path,
        ])
        #expect(copyright.stdout.hasPrefix("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"), "\(copyright)")
    }

    /// `dpkg --root` into an empty scratch root, as an administrator would install it, then remove and purge.
    ///
    /// dpkg runs unprivileged here (`--force-not-root`); `--force-script-chrootless` runs the maintainer scripts on
    /// the host with `DPKG_ROOT` set (the scratch root has no shell to chroot into), which they honour:
    /// `systemd-sysusers --root`, `deb-systemd-helper` (init-system-helpers ≥ 1.61), nothing started. `--force-depends`:
    /// the scratch root has no libc6 or systemd packages.
    @Test func dpkgInstallsItIntoAScratchRootAndTheUnitsVerify() throws {
        let package = try Self.built.get()
        let root = package.directory + "/root"
        for directory in ["info", "updates", "triggers"] {
            try FileManager.default.createDirectory(atPath: "\(root)/var/lib/dpkg/\(directory)", withIntermediateDirectories: true)
        }
        for file in ["status", "available"] { FileManager.default.createFile(atPath: "\(root)/var/lib/dpkg/\(file)", contents: nil) }
        defer { try? FileManager.default.removeItem(atPath: root) }
        let dpkg = [
            "dpkg", "--root=\(root)", "--force-not-root", "--force-depends", "--force-script-chrootless", "--log=/dev/null",
        ]

        let install = try runCommand(dpkg + ["--install", package.path], timeout: 120)
        #expect(install.status == 0, "\(install.stdout)\(install.stderr)")
        let service = try String(contentsOfFile: root + "/usr/lib/systemd/system/tokend.service", encoding: .utf8)
        #expect(service.contains("\nExecStart=/usr/bin/tokend run\n"), "\(service)")
        #expect(service.contains("\nExecReload=/usr/bin/tokend check --skip-credentials\n"))
        #expect(service.contains("file:/usr/share/doc/tokend/README.md"))
        #expect(!service.contains("/usr/local/"), "a path the install did not rewrite")
        let installed = try runCommand([root + "/usr/bin/tokend", "--version"])
        #expect(installed.stdout == package.version + "\n", "\(installed)")
        #expect(try String(contentsOfFile: root + "/etc/tokend/tokend.toml", encoding: .utf8).contains("[refresh]"))

        // postinst: the tokend user and group from the sysusers.d entry, the units enabled.
        let passwd = (try? String(contentsOfFile: root + "/etc/passwd", encoding: .utf8)) ?? ""
        let group = (try? String(contentsOfFile: root + "/etc/group", encoding: .utf8)) ?? ""
        #expect(passwd.split(separator: "\n").contains { $0.hasPrefix("tokend:") }, "postinst made no user: \(install.stderr)")
        #expect(group.split(separator: "\n").contains { $0.hasPrefix("tokend:") }, "postinst made no group")
        let wants = [
            "/etc/systemd/system/sockets.target.wants/tokend.socket": "/usr/lib/systemd/system/tokend.socket",
            "/etc/systemd/system/multi-user.target.wants/tokend.service": "/usr/lib/systemd/system/tokend.service",
        ]
        for (link, target) in wants {
            let destination = try? FileManager.default.destinationOfSymbolicLink(atPath: root + link)
            #expect(destination == target, "\(link) → \(destination ?? "missing")")
        }

        // systemd-analyze verify on the installed units, with the root's paths (ExecStart=/usr/bin/tokend must exist
        // there, man:tokend(8) must be found). It loads sysinit.target and friends from the root too: the host's
        // unit files are copied into a second copy of the root, not into the one dpkg owns.
        let verifyRoot = package.directory + "/verify-root"
        defer { try? FileManager.default.removeItem(atPath: verifyRoot) }
        let copy = try runCommand([
            "sh", "-c", "cp -a \"$1/.\" \"$2/\" && cp -an /usr/lib/systemd/system/. \"$2/usr/lib/systemd/system/\"", "sh", root,
            verifyRoot,
        ])
        #expect(copy.status == 0 || FileManager.default.fileExists(atPath: verifyRoot + "/usr/bin/tokend"), "\(copy.stderr)")
        let verify = try runCommand([
            "/usr/bin/env", "MANPATH=\(verifyRoot)/usr/share/man", "systemd-analyze", "verify", "--root=\(verifyRoot)",
            "/usr/lib/systemd/system/tokend.service", "/usr/lib/systemd/system/tokend.socket",
            "/usr/lib/systemd/system/tokend-credentials.socket",
        ])
        #expect(verify.status == 0 && verify.stdout.isEmpty && verify.stderr.isEmpty, "systemd-analyze verify: \(verify)")

        // Removal keeps a changed conffile and masks the units; purge removes both.
        try "log_level = \"debug\"\n".write(toFile: root + "/etc/tokend/tokend.toml", atomically: true, encoding: .utf8)
        let remove = try runCommand(dpkg + ["--remove", "tokend"], timeout: 120)
        #expect(remove.status == 0, "\(remove.stdout)\(remove.stderr)")
        #expect(!FileManager.default.fileExists(atPath: root + "/usr/bin/tokend"))
        #expect((try? String(contentsOfFile: root + "/etc/tokend/tokend.toml", encoding: .utf8)) == "log_level = \"debug\"\n")
        let purge = try runCommand(dpkg + ["--purge", "tokend"], timeout: 120)
        #expect(purge.status == 0, "\(purge.stdout)\(purge.stderr)")
        for path in [
            "/etc/tokend/tokend.toml", "/etc/systemd/system/sockets.target.wants/tokend.socket", "/etc/systemd/system/tokend.socket",
        ] {
            var info = stat()
            #expect(lstat(root + path, &info) != 0, "\(path) survived the purge")
        }
    }

    /// The units from the package under a real systemd (``SystemdSandbox``, root only): the socket starts, the first
    /// request starts the service (socket activation) and is answered.
    ///
    /// Only the binary's path is changed, as in `SystemdServiceTests`: the sandbox's `/usr` is the host's, read-only,
    /// so the installed `/usr/bin/tokend` is staged beside the units. `DefaultDependencies=no`: the sandbox has no
    /// sysinit.target.
    @Test(
        .disabled(
            if: SystemdSandbox.unavailableReason != nil,
            Comment(rawValue: "skipped, a real systemd cannot run here: \(SystemdSandbox.unavailableReason ?? "")")
        )
    )
    func theInstalledUnitsRunUnderARealSystemd() throws {
        let package = try Self.built.get()
        let root = package.directory + "/extracted"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let extract = try runCommand(["dpkg-deb", "--extract", package.path, root], timeout: 120)
        #expect(extract.status == 0, "\(extract.stderr)")
        let stage = SystemdSandbox.stageInside
        func installed(_ name: String) throws -> String {
            try String(contentsOfFile: "\(root)/usr/lib/systemd/system/\(name)", encoding: .utf8)
                .replacingOccurrences(of: "/usr/bin/tokend", with: "\(stage)/bin/tokend")
                .replacingOccurrences(of: "[Unit]\n", with: "[Unit]\nDefaultDependencies=no\n")
        }
        let sandbox = try SystemdSandbox.boot(
            units: [
                "test.target": "[Unit]\nDescription=tokend test\nDefaultDependencies=no\n",
                "tokend.service": try installed("tokend.service"),
                "tokend.socket": try installed("tokend.socket"),
                "tokend-credentials.socket": try installed("tokend-credentials.socket"),
                "tokend.service.d/test.conf":
                    "[Service]\nStandardOutput=append:\(stage)/tokend.log\nStandardError=append:\(stage)/tokend.log\n",
            ],
            files: [
                "bin/tokend": (try Data(contentsOf: URL(fileURLWithPath: root + "/usr/bin/tokend")), 0o755),
                "tokend.sysusers": (try Data(contentsOf: URL(fileURLWithPath: root + "/usr/lib/sysusers.d/tokend.conf")), 0o644),
            ]
        )
        defer { sandbox.shutdown() }
        let sysusers = try sandbox.run(["systemd-sysusers", "\(stage)/tokend.sysusers"])
        #expect(sysusers.status == 0, "\(sysusers.stderr)")
        let start = try sandbox.systemctl("start", "tokend.socket")
        #expect(start.status == 0, "\(start.stderr)")
        #expect(try sandbox.property("ActiveState", of: "tokend.service") == "inactive")

        let health = try runCommand([
            "curl", "-s", "--max-time", "20", "--unix-socket", sandbox.root + "/run/tokend/tokend.sock", "http://localhost/v1/health",
        ])
        let log = sandbox.read("\(stage)/tokend.log")
        #expect(health.stdout == #"{"reasons":{},"status":"ok"}"# + "\n", "\(health) log: \(log)")
        #expect(try sandbox.property("ActiveState", of: "tokend.service") == "active", "\(log)")
        #expect(try sandbox.property("ExecMainPID", of: "tokend.service") != "0")
        let stop = try sandbox.systemctl("stop", "tokend.service", "tokend.socket")
        #expect(stop.status == 0, "\(stop.stderr)")
        #expect(try sandbox.property("ExecMainStatus", of: "tokend.service") == "0", "\(sandbox.read("\(stage)/tokend.log"))")
    }
}
