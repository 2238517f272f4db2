import Foundation
import TokendCore

#if canImport(Glibc)
import Glibc
#endif

/// A private PostgreSQL cluster for one test: its own directory under /tmp, a Unix socket there and a free loopback port.
///
/// `initdb` makes a superuser with a password: TCP connections (127.0.0.1 only) authenticate with SCRAM-SHA-256, the
/// socket trusts everyone who can reach it (the directory is private). `fsync` is off. PostgreSQL refuses to run as
/// root, so as root the server runs as `nobody` (uid 65534) through `setpriv`, the directory handed to it.
///
/// Every command has a time limit. ``destroy()`` (also run by `deinit`) stops the server and removes the directory;
/// ``with(_:)`` does so however the body ends.
public final class PostgresCluster: Sendable {
    /// What went wrong, with the command and its output.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The superuser `initdb` makes.
    public let superuser = "tokend_admin"
    /// The superuser's password (over TCP; the socket trusts).
    public let superuserPassword: String
    /// The temporary directory that holds everything; removed by ``destroy()``.
    public let directory: String
    /// Where the socket is: `<socketDirectory>/.s.PGSQL.<port>`.
    public var socketDirectory: String { directory + "/socket" }
    /// The socket file.
    public var socketPath: String { socketDirectory + "/.s.PGSQL.\(port)" }
    /// The data directory.
    public var dataDirectory: String { directory + "/data" }
    /// The server's log (read it when a test fails).
    public var logFile: String { directory + "/server.log" }
    /// The loopback TCP port the server listens on (the same after a restart).
    public let port: Int
    /// Where `initdb`, `pg_ctl` and `psql` are.
    public let binDirectory: String

    /// The bin directory of the newest PostgreSQL under `/usr/lib/postgresql/<version>/bin` with `initdb`, or nil.
    public static var installedBinDirectory: String? {
        let root = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        let usable = versions.filter { FileManager.default.isExecutableFile(atPath: "\(root)/\($0)/bin/initdb") }
        return usable.max { (Int($0) ?? 0) < (Int($1) ?? 0) }.map { "\(root)/\($0)/bin" }
    }

    private static let serverUID: uid_t = 65534

    /// Makes the directory and runs `initdb`; the server is not started (``start()``).
    public init() async throws {
        guard let bin = Self.installedBinDirectory else {
            throw Failure(description: "no PostgreSQL under /usr/lib/postgresql/*/bin (scripts/install-deps installs it)")
        }
        binDirectory = bin
        var template = Array("/tmp/tokend-pg-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Failure(description: "mkdtemp failed") }
        directory = String(cString: made)
        superuserPassword = "pw-" + UUID().uuidString.lowercased()
        do {
            port = try Self.freeLoopbackPort()
            try await initialize()
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    deinit {
        destroySynchronously()
    }

    /// Runs `body` with a started cluster, then stops it and removes its directory, whether `body` returns or throws.
    public static func with<Result>(_ body: (PostgresCluster) async throws -> Result) async throws -> Result {
        let cluster = try await PostgresCluster()
        do {
            try await cluster.start()
            let result = try await body(cluster)
            await cluster.destroy()
            return result
        } catch {
            await cluster.destroy()
            throw error
        }
    }

    /// Starts the server and waits until it accepts connections.
    public func start() async throws {
        try await run(
            binDirectory + "/pg_ctl",
            ["start", "-w", "-t", "20", "-D", dataDirectory, "-l", logFile],
            asServer: true,
            timeout: 25
        )
    }

    /// Stops the server, `-m fast`: sessions are ended, clients see the server go away.
    public func stop() async throws {
        try await run(binDirectory + "/pg_ctl", ["stop", "-w", "-t", "20", "-m", "fast", "-D", dataDirectory], asServer: true, timeout: 25)
    }

    /// Stops (fast) and starts the server again, on the same socket and port.
    public func restart() async throws {
        try await stop()
        try await start()
    }

    /// Stops the server if it runs and removes the directory; safe to call more than once.
    public func destroy() async {
        thaw()
        if isRunning {
            _ = try? await run(
                binDirectory + "/pg_ctl",
                ["stop", "-w", "-t", "10", "-m", "immediate", "-D", dataDirectory],
                asServer: true,
                timeout: 15
            )
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Whether a postmaster of this cluster runs (its pid file names a live process).
    public var isRunning: Bool {
        guard let pid = postmasterPID else { return false }
        return kill(pid, 0) == 0
    }

    /// The postmaster's process id, from its pid file.
    public var postmasterPID: pid_t? {
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
            let line = text.split(separator: "\n").first
        else { return nil }
        return pid_t(line.trimmingCharacters(in: .whitespaces))
    }

    /// Stops (SIGSTOP) the postmaster and every backend: connections are accepted by the kernel but nothing answers,
    /// and queries on open connections hang, the way a wedged database or a silent network looks.
    public func freeze() {
        signalServer(SIGSTOP)
    }

    /// Undoes ``freeze()``.
    public func thaw() {
        signalServer(SIGCONT)
    }

    private func signalServer(_ signal: Int32) {
        guard let postmaster = postmasterPID else { return }
        var processes = [postmaster]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = pid_t(entry),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            // Fields after "(comm)": state, ppid, …
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, pid_t(fields[1]) == postmaster { processes.append(pid) }
        }
        for pid in processes {
            kill(pid, signal)
        }
    }

    /// Makes a login role with a password and a database it owns.
    public func createDatabase(_ name: String, user: String, password: String) async throws {
        try await sql("CREATE ROLE \(Self.identifier(user)) LOGIN PASSWORD \(Self.literal(password))")
        try await sql("CREATE DATABASE \(Self.identifier(name)) OWNER \(Self.identifier(user))")
    }

    /// Runs SQL as the superuser over the socket (`psql -At`, stopping at the first error) and returns what it printed.
    @discardableResult
    public func sql(_ text: String, database: String = "postgres") async throws -> String {
        try await run(
            binDirectory + "/psql",
            [
                "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", socketDirectory, "-p", "\(port)", "-U", superuser, "-d", database,
                "-c", text,
            ],
            asServer: false,
            timeout: 15
        )
    }

    /// Where `database` is for tokend, as `user`: over TCP to 127.0.0.1 (password, `tls`) or through the socket.
    public func fleetDatabase(
        _ database: String,
        user: String,
        overTCP: Bool = true,
        tls: FleetDatabase.TLSMode = .disable
    ) -> FleetDatabase {
        FleetDatabase(
            address: overTCP ? .tcp(host: "127.0.0.1", port: port) : .unixSocket(path: socketPath),
            user: user,
            name: database,
            tls: overTCP ? tls : .disable
        )
    }

    /// Turns TLS on (`ssl = on`) with this certificate and key (PEM files, copied in); takes effect at the next start.
    public func enableTLS(certificateFile: String, keyFile: String) throws {
        let certificate = dataDirectory + "/server.crt"
        let key = dataDirectory + "/server.key"
        for (from, to) in [(certificateFile, certificate), (keyFile, key)] {
            try? FileManager.default.removeItem(atPath: to)
            try FileManager.default.copyItem(atPath: from, toPath: to)
            chmod(to, 0o600)
            if getuid() == 0 { chown(to, Self.serverUID, gid_t(Self.serverUID)) }
        }
        try appendSettings(["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"])
    }

    // MARK: - Setting up

    private func initialize() async throws {
        try startWatchdog()
        let passwordFile = directory + "/superuser-password"
        try superuserPassword.write(toFile: passwordFile, atomically: false, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: socketDirectory, withIntermediateDirectories: false)
        // Modes set outright: the umask is process-wide, and another test may narrow it for a moment (a socket bound
        // under umask 0177 would leave the server's user unable to enter a 0600 directory).
        for path in [directory, socketDirectory] {
            guard chmod(path, 0o700) == 0 else { throw Failure(description: "chmod \(path) failed: errno \(errno)") }
        }
        if getuid() == 0 {
            for path in [directory, socketDirectory, passwordFile] {
                guard chown(path, Self.serverUID, gid_t(Self.serverUID)) == 0 else {
                    throw Failure(description: "chown \(path) to \(Self.serverUID) failed: errno \(errno)")
                }
            }
        }
        try await run(
            binDirectory + "/initdb",
            [
                "-D", dataDirectory, "-U", superuser, "--pwfile=\(passwordFile)", "--auth-local=trust", "--auth-host=scram-sha-256",
                "--encoding=UTF8", "--locale=C", "--no-sync",
            ],
            asServer: true,
            timeout: 60
        )
        try? FileManager.default.removeItem(atPath: passwordFile)
        try appendSettings([
            "listen_addresses = '127.0.0.1'",
            "port = \(port)",
            "unix_socket_directories = '\(socketDirectory)'",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "max_connections = 60",
            "shared_buffers = 16MB",
        ])
    }

    private func appendSettings(_ lines: [String]) throws {
        let file = dataDirectory + "/postgresql.conf"
        guard let handle = FileHandle(forWritingAtPath: file) else { throw Failure(description: "cannot open \(file)") }
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(("\n" + lines.joined(separator: "\n") + "\n").utf8))
    }

    private static func freeLoopbackPort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Failure(description: "socket failed: errno \(errno)") }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw -> Int32 in
                guard bind(descriptor, raw, length) == 0 else { return -1 }
                return getsockname(descriptor, raw, &length)
            }
        }
        guard bound == 0 else { throw Failure(description: "bind to 127.0.0.1:0 failed: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    // MARK: - Running commands

    /// Runs a command (as uid 65534 when `asServer` and this process is root), killing it after `timeout` seconds.
    @discardableResult
    private func run(_ executable: String, _ arguments: [String], asServer: Bool, timeout: Double) async throws -> String {
        let outputFile = directory + "/command-\(UUID().uuidString).out"
        defer { try? FileManager.default.removeItem(atPath: outputFile) }
        let pid = try spawn(command(executable, arguments, asServer: asServer), output: outputFile)
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if ContinuousClock.now > deadline {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                throw Failure(description: "\((executable as NSString).lastPathComponent) timed out after \(timeout) s")
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        let text = (try? String(contentsOfFile: outputFile, encoding: .utf8)) ?? ""
        // Exited normally (low 7 bits zero) with status 0.
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
            let command = ([(executable as NSString).lastPathComponent] + arguments.prefix(4)).joined(separator: " ")
            throw Failure(description: "\(command) … failed (wait status \(status)): \(text)")
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The command line, through `setpriv` to uid 65534 when `asServer` and this process is root.
    private func command(_ executable: String, _ arguments: [String], asServer: Bool) -> [String] {
        guard asServer && getuid() == 0 else { return [executable] + arguments }
        let uid = Self.serverUID
        return ["/usr/bin/setpriv", "--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", executable] + arguments
    }

    /// Starts `command` in ``directory`` with stdin from /dev/null, stdout and stderr to `output`.
    ///
    /// Not Foundation's `Process`: on Linux it learns of the exit through a socket the child inherits, and the
    /// postmaster that `pg_ctl start` leaves behind would hold that socket open, so `pg_ctl` would never seem to end.
    private func spawn(_ command: [String], output: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") && $0.key != "LC_ALL" }
        environment["LC_ALL"] = "C"
        // In the cluster's directory (the server's user may not enter the test's); descriptors this process opened
        // are close-on-exec (Swift, NIO), so none reaches the server.
        let argv = (["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", directory] + command).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv + envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, "/bin/sh", &actions, nil, argv, envp)
        guard result == 0 else { throw Failure(description: "cannot start \(command[0]): errno \(result)") }
        return pid
    }

    /// Starts a shell that outlives this process: when the process ends without ``destroy()`` (killed by a
    /// time limit, crashed), it stops the server and removes the directory; when the directory is gone, it exits.
    private func startWatchdog() throws {
        let stop = command(binDirectory + "/pg_ctl", ["stop", "-m", "immediate", "-D", dataDirectory], asServer: true)
            .map { "'\($0)'" }.joined(separator: " ")
        let pidFile = "'\(dataDirectory)/postmaster.pid'"
        let script = """
            while kill -0 \(getpid()) 2>/dev/null && [ -d '\(directory)' ]; do sleep 0.5; done
            [ -d '\(directory)' ] || exit 0
            if [ -f \(pidFile) ]; then
                pid=$(head -n 1 \(pidFile)); kill -CONT "$pid" 2>/dev/null; pkill -CONT -P "$pid" 2>/dev/null
                \(stop) >/dev/null 2>&1
            fi
            rm -rf '\(directory)'
            """
        // Run in the background of a shell that exits at once, so the watchdog is not this process's child.
        var status: Int32 = 0
        let launcher = try spawn(["/bin/sh", "-c", "setsid /bin/sh -c \"$0\" >/dev/null 2>&1 &", script], output: "/dev/null")
        waitpid(launcher, &status, 0)
    }

    /// `deinit` cannot await: stops the server with a blocking `pg_ctl stop -m immediate` and removes the directory.
    private func destroySynchronously() {
        guard FileManager.default.fileExists(atPath: directory) else { return }
        thaw()
        if isRunning {
            let stop = [binDirectory + "/pg_ctl", "stop", "-w", "-t", "10", "-m", "immediate", "-D", dataDirectory]
            if let pid = try? spawn(command(stop[0], Array(stop.dropFirst()), asServer: true), output: "/dev/null") {
                var status: Int32 = 0
                waitpid(pid, &status, 0)
            }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A double-quoted SQL identifier.
    public static func identifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// A single-quoted SQL string literal.
    public static func literal(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }
}
