import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real systemd, running as PID 1 of private PID, mount, UTS, IPC and cgroup namespaces, with only the units a test
/// gives it.
///
/// The host's root is read-only inside; `/etc` and `/var` are overlays, `/run`, `/tmp` and the cgroup2 tree are its own
/// (its tmpfiles and credential set-up never touch the host's `/tmp`). The network namespace is shared, so units reach
/// a token endpoint the test runs on 127.0.0.1.
///
/// Files inside are reached from the host through `/proc/<pid>/root`; `systemctl` runs through `nsenter`.
final class SystemdSandbox: @unchecked Sendable {
    /// Where the staged units and binaries live inside (a tmpfs under the sandbox's own `/run`).
    static let stageInside = "/run/tokend-test"

    let pid: pid_t
    private let launcher: Process
    private let stage: String
    private let cgroup: String

    /// `/proc/<pid>/root`: the sandbox's `/` seen from the host.
    var root: String { "/proc/\(pid)/root" }

    /// The trait of a suite that needs a sandboxed systemd: skipped, with the reason, where none can run.
    static var required: ConditionTrait {
        .disabled(if: unavailableReason != nil, Comment(rawValue: "skipped, a real systemd cannot run here: \(unavailableReason ?? "")"))
    }

    /// Why the sandbox cannot run here, or nil when it can.
    static let unavailableReason: String? = {
        guard geteuid() == 0 else { return "needs root (unshare, mount and cgroup2 set-up)" }
        guard systemdBinary != nil else { return "no /lib/systemd/systemd" }
        for tool in ["/usr/bin/unshare", "/usr/bin/nsenter"] where !FileManager.default.isExecutableFile(atPath: tool) {
            return "\(tool) is missing (util-linux)"
        }
        guard cgroupParent() != nil else { return "no writable cgroup2 hierarchy" }
        return nil
    }()

    private static var systemdBinary: String? {
        ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The cgroup2 directory of this process (the sandbox gets a child of it), from /proc/self/mountinfo and
    /// /proc/self/cgroup.
    ///
    /// On hybrid hosts cgroup2 sits at /sys/fs/cgroup/unified.
    private static func cgroupParent() -> String? {
        guard let mountinfo = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8),
            let ownCgroups = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
            let own = ownCgroups.split(separator: "\n").first(where: { $0.hasPrefix("0::") })
        else { return nil }
        for line in mountinfo.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
            let fields = halves[0].split(separator: " ")
            guard fields.count > 4 else { continue }
            let mountRoot = String(fields[3])
            let mountPoint = String(fields[4])
            var relative = String(own.dropFirst(3))
            if mountRoot != "/", relative.hasPrefix(mountRoot) { relative = String(relative.dropFirst(mountRoot.count)) }
            let path = mountPoint + (relative == "/" ? "" : relative)
            if access(path, W_OK) == 0 { return path }
        }
        return nil
    }

    /// Boots systemd with `units` (file name → contents) and `files` (path inside the stage → contents and mode)
    /// staged under ``stageInside``, and returns once `systemctl is-system-running` answers.
    static func boot(units: [String: String], files: [String: (contents: Data, mode: Int)] = [:]) throws -> SystemdSandbox {
        if let reason = unavailableReason { throw HarnessError("systemd sandbox unavailable: \(reason)") }
        let fm = FileManager.default
        let id = UUID().uuidString.prefix(8).lowercased()
        let stage = fm.temporaryDirectory.appendingPathComponent("tokend-systemd-\(id)").path
        try fm.createDirectory(atPath: stage + "/units", withIntermediateDirectories: true)
        for (name, text) in units {
            let path = "\(stage)/units/\(name)"
            try fm.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        for (name, file) in files {
            let path = "\(stage)/\(name)"
            try fm.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try file.contents.write(to: URL(fileURLWithPath: path))
            try fm.setAttributes([.posixPermissions: file.mode], ofItemAtPath: path)
        }
        try bootScript(systemd: systemdBinary!).write(toFile: stage + "/boot.sh", atomically: true, encoding: .utf8)
        let cgroup = cgroupParent()! + "/tokend-test-\(id)"
        try fm.createDirectory(atPath: cgroup, withIntermediateDirectories: false)

        let launcher = Process()
        launcher.executableURL = URL(fileURLWithPath: "/bin/sh")
        // The shell moves itself into the test's cgroup, so that the new cgroup namespace is rooted there.
        launcher.arguments = [
            "-c",
            "echo $$ > \"$1/cgroup.procs\" && exec unshare --pid --fork --kill-child --mount --mount-proc --uts --ipc --cgroup /bin/sh \"$2/boot.sh\" \"$2\"",
            "sh", cgroup, stage,
        ]
        guard fm.createFile(atPath: stage + "/boot.log", contents: nil),
            let log = FileHandle(forWritingAtPath: stage + "/boot.log")
        else { throw HarnessError("cannot create \(stage)/boot.log") }
        launcher.standardOutput = log
        launcher.standardError = log
        launcher.standardInput = FileHandle.nullDevice
        try launcher.run()

        var systemdPID: pid_t?
        let deadline = Date().addingTimeInterval(10)
        while systemdPID == nil, Date() < deadline, launcher.isRunning {
            let children = "/proc/\(launcher.processIdentifier)/task/\(launcher.processIdentifier)/children"
            if let text = try? String(contentsOfFile: children, encoding: .utf8),
                let first = text.split(separator: " ").first, let value = pid_t(first),
                let comm = try? String(contentsOfFile: "/proc/\(value)/comm", encoding: .utf8), comm.hasPrefix("systemd")
            {
                systemdPID = value
            } else {
                usleep(20_000)
            }
        }
        guard let systemdPID else {
            let text = (try? String(contentsOfFile: stage + "/boot.log", encoding: .utf8)) ?? ""
            if launcher.isRunning { kill(launcher.processIdentifier, SIGKILL) }
            launcher.waitUntilExit()
            rmdir(cgroup)
            throw HarnessError("systemd did not start in the sandbox: \(text)")
        }
        let sandbox = SystemdSandbox(pid: systemdPID, launcher: launcher, stage: stage, cgroup: cgroup)
        let booted = Date().addingTimeInterval(20)
        while Date() < booted {
            let state = try sandbox.systemctl("is-system-running").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            if state == "running" || state == "degraded" { return sandbox }
            usleep(50_000)
        }
        sandbox.shutdown()
        throw HarnessError("systemd in the sandbox did not finish starting")
    }

    private init(pid: pid_t, launcher: Process, stage: String, cgroup: String) {
        self.pid = pid
        self.launcher = launcher
        self.stage = stage
        self.cgroup = cgroup
    }

    /// PID 1's script: private mounts, then the sandbox's own /run, /tmp and cgroup2, overlays over /etc and
    /// /var, the rest read-only; then `/` shared again inside (systemd moves credential mounts into place through
    /// mount propagation) and systemd, with only the staged units, logging to the staged boot.log.
    private static func bootScript(systemd: String) -> String {
        """
        set -e
        mount --make-rprivate /
        mount -t tmpfs -o mode=0755 tmpfs /run
        cp -a "$1" \(stageInside)
        mount -t tmpfs -o mode=1777 tmpfs /tmp
        mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup
        mount -t cgroup2 cgroup2 /sys/fs/cgroup
        for dir in etc var; do
            mkdir -p /run/overlay/$dir/upper /run/overlay/$dir/work
            mount -t overlay overlay -o lowerdir=/$dir,upperdir=/run/overlay/$dir/upper,workdir=/run/overlay/$dir/work /$dir
        done
        mount -o remount,bind,ro /
        mount --make-rshared /
        export SYSTEMD_UNIT_PATH=\(stageInside)/units
        export container=tokend-test
        exec \(systemd) --system --unit=test.target
        """
    }

    /// Runs `systemctl <arguments>` inside.
    @discardableResult
    func systemctl(_ arguments: String..., timeout: Double = 60) throws -> CommandResult {
        try run(["systemctl"] + arguments, timeout: timeout)
    }

    /// Starts a command inside without waiting for it.
    func spawn(_ argv: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        process.arguments = ["-t", "\(pid)", "-m", "-p", "--"] + argv
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Runs a command inside the sandbox's mount and PID namespaces.
    func run(_ argv: [String], timeout: Double = 60) throws -> CommandResult {
        try runCommand(["/usr/bin/nsenter", "-t", "\(pid)", "-m", "-p", "--"] + argv, timeout: timeout)
    }

    /// One property of a unit (`systemctl show -p NAME --value`).
    func property(_ name: String, of unit: String) throws -> String {
        try systemctl("show", "-p", name, "--value", unit).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Writes a file inside the sandbox (through /proc/<pid>/root), creating its directories.
    func write(_ path: String, _ text: String, mode: Int = 0o644) throws {
        let hostPath = root + path
        try FileManager.default.createDirectory(
            atPath: (hostPath as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true
        )
        try text.write(toFile: hostPath, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: hostPath)
    }

    func read(_ path: String) -> String {
        (try? String(contentsOfFile: root + path, encoding: .utf8)) ?? ""
    }

    /// Kills the sandbox (PID 1 first, which ends every process in it) and removes its cgroup and stage.
    func shutdown() {
        if launcher.isRunning { kill(launcher.processIdentifier, SIGKILL) }
        kill(pid, SIGKILL)
        launcher.waitUntilExit()
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            // Children first: systemd made slices and scopes below the test's cgroup.
            let tree = ((try? FileManager.default.subpathsOfDirectory(atPath: cgroup)) ?? [])
                .map { "\(cgroup)/\($0)" }
                .filter {
                    var s = stat()
                    return lstat($0, &s) == 0 && (s.st_mode & S_IFMT) == S_IFDIR
                }
                .sorted { $0.count > $1.count }
            for dir in tree { rmdir(dir) }
            if rmdir(cgroup) == 0 || errno == ENOENT { break }
            usleep(50_000)
        }
        try? FileManager.default.removeItem(atPath: stage)
    }
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `argv` to completion (killed after `timeout` seconds so that a test fails instead of hanging).
func runCommand(_ argv: [String], stdin: String? = nil, timeout: Double = 60) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: argv[0].hasPrefix("/") ? argv[0] : "/usr/bin/env")
    process.arguments = argv[0].hasPrefix("/") ? Array(argv.dropFirst()) : argv
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    let pid = process.processIdentifier
    let watchdog = DispatchWorkItem { kill(pid, SIGKILL) }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
    defer { watchdog.cancel() }
    // Read stderr on another thread so that neither pipe fills up while the other is drained.
    final class Collected: @unchecked Sendable { var data = Data() }
    let errData = Collected()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        errData.data = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return CommandResult(
        status: process.terminationStatus,
        stdout: String(decoding: stdout, as: UTF8.self),
        stderr: String(decoding: errData.data, as: UTF8.self)
    )
}
