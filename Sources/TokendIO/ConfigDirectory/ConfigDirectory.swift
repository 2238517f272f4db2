import Foundation
import NIOConcurrencyHelpers
import TokendCore

#if canImport(Glibc)
import Glibc
#endif

/// Reads a config directory (`tokend.toml`, `instances/*.toml`) and secret files, and hands the texts to the core.
public struct ConfigDirectory: Sendable {
    public let path: String
    /// `$CREDENTIALS_DIRECTORY`, for `{ credential = "…" }` values.
    public let credentialsDirectory: String?
    /// When false, `{ credential = "…" }` values are not read (a placeholder stands in): for `tokend check` as
    /// systemd's `ExecReload=`, which does not see the unit's credentials on systemd 252–256.
    public let readsCredentials: Bool

    /// Files larger than this are refused (a config file is a few KiB).
    static let maxFileBytes = 1 << 20

    /// The environment, for `HTTPS_PROXY` and `NO_PROXY` on discovery requests.
    public let environment: [String: String]

    /// The last load's parses and renderings: a reload works only on what changed.
    private let memo = ConfigLoader.Memo()

    public init(
        path: String,
        credentialsDirectory: String?,
        readsCredentials: Bool = true,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.path = path
        self.credentialsDirectory = credentialsDirectory
        self.readsCredentials = readsCredentials
        self.environment = environment
    }

    /// A failure to read the directory itself: fatal at start-up, a rejected reload later.
    public struct Unreadable: Error, Sendable, CustomStringConvertible {
        public var path: String
        public var reason: String
        public var errno: Int32

        public init(path: String, reason: String, errno: Int32) {
            self.path = path
            self.reason = reason
            self.errno = errno
        }

        public var description: String { "\(path): \(reason)" }
    }

    /// Reads and validates the whole directory.
    ///
    /// Throws only when the directory itself cannot be read.
    public func load() throws(Unreadable) -> ConfigLoader.Loaded {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw Unreadable(path: path, reason: "config directory does not exist or is not a directory", errno: ENOENT)
        }
        guard access(path, R_OK | X_OK) == 0 else {
            throw Unreadable(path: path, reason: "config directory is not readable", errno: errno)
        }
        let settingsPath = Self.join(path, "tokend.toml")
        var settings: Result<ConfigLoader.File, ConfigDiagnostic>?
        let instances: [(name: String, file: Result<ConfigLoader.File, ConfigDiagnostic>)]
        if FileManager.default.fileExists(atPath: settingsPath) {
            // An unreadable tokend.toml rejects the start or the reload like a broken one.
            settings = Self.readText(settingsPath).map { ConfigLoader.File(path: settingsPath, text: $0) }
        }
        instances = Self.tomlFiles(in: Self.join(path, "instances"))
        let connectors = Self.tomlFiles(in: Self.join(path, "connectors"))
        let input = ConfigLoader.Input(settings: settings, connectors: connectors, instances: instances)
        let credentials = credentialsDirectory
        let readsCredentials = readsCredentials
        let discovery = DiscoveryFetcher(environment: environment)
        defer { discovery.close() }
        // Many instances may name one secret file: it is read once per load (and again on the next).
        let secrets = NIOLockedValueBox<[VariableSource: Result<ConfigLoader.SecretText, ConfigLoader.SecretReadError>]>([:])
        return ConfigLoader.load(
            input,
            memo: memo,
            resolveIdentity: Self.resolveIdentity,
            checkTLS: TLSConfigurations.check,
            discover: discovery.discoverer
        ) { source in
            if !readsCredentials, case .credential(let name) = source {
                return .success(.init("<credential \(name), not read>"))
            }
            if let known = secrets.withLockedValue({ $0[source] }) { return known }
            let read = Self.readSecret(source, credentialsDirectory: credentials)
            secrets.withLockedValue { $0[source] = read }
            return read
        }
    }

    /// A user or group name to its id, through the system's user database (NSS).
    public static let resolveIdentity: ConfigLoader.IdentityResolver = { kind, name in
        switch kind {
        case .user: return getpwnam(name).map { $0.pointee.pw_uid }
        case .group: return getgrnam(name).map { $0.pointee.gr_gid }
        }
    }

    /// Every `*.toml` of a subdirectory (sorted, hidden files skipped), read.
    static func tomlFiles(in directory: String) -> [(name: String, file: Result<ConfigLoader.File, ConfigDiagnostic>)] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
            .filter { $0.hasSuffix(".toml") && !$0.hasPrefix(".") }
        // Read on every core: thousands of files read one after another are a noticeable part of a start.
        return Parallel.map(names.count) { index in
            let filePath = join(directory, names[index])
            return (String(names[index].dropLast(5)), readText(filePath).map { ConfigLoader.File(path: filePath, text: $0) })
        }
    }

    static func readSecret(
        _ source: VariableSource,
        credentialsDirectory: String?
    ) -> Result<ConfigLoader.SecretText, ConfigLoader.SecretReadError> {
        let file: String
        switch source {
        case .literal(let text):
            return .success(.init(text))
        case .instance(let name):
            return .failure(.init("instance '\(name)' is not a file"))
        case .file(let path):
            file = path
        case .credential(let name):
            guard let directory = credentialsDirectory, !directory.isEmpty else {
                return .failure(.init("credential '\(name)' requested but $CREDENTIALS_DIRECTORY is not set"))
            }
            file = join(directory, name)
        }
        switch readText(file) {
        case .success(let text):
            var info = stat()
            if case .file = source, stat(file, &info) == 0, info.st_mode & 0o004 != 0 {
                let mode = String(info.st_mode & 0o777, radix: 8)
                return .success(.init(text, warning: "secret file \(file) is readable by every user (mode 0\(mode)); chmod 600 it"))
            }
            return .success(.init(text))
        case .failure(let diagnostic):
            return .failure(.init(diagnostic.message))
        }
    }

    /// Reads a UTF-8 text file of bounded size; the failure names the file and why.
    ///
    /// Only regular files are read: a FIFO (opened without O_NONBLOCK) would block the reload, and with it the I/O
    /// queue, until someone writes to it; a device could be endless.
    static func readText(_ file: String) -> Result<String, ConfigDiagnostic> {
        let fd = open(file, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let reason = FileManager.default.fileExists(atPath: file) ? "cannot be read (permission denied?)" : "does not exist"
            return .failure(ConfigDiagnostic(file: file, line: nil, message: "file \(file) \(reason)"))
        }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            return .failure(ConfigDiagnostic(file: file, line: nil, message: "file \(file) is not a regular file"))
        }
        defer { close(fd) }
        // One byte past the limit tells a file that is too large (its size may change while it is read).
        guard let bytes = readAll(fd, limit: maxFileBytes + 1, sizeHint: Int(info.st_size) + 1) else {
            return .failure(ConfigDiagnostic(file: file, line: nil, message: "file \(file) cannot be read"))
        }
        guard bytes.count <= maxFileBytes else {
            return .failure(ConfigDiagnostic(file: file, line: nil, message: "file \(file) is larger than 1 MiB"))
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return .failure(ConfigDiagnostic(file: file, line: nil, message: "file \(file) is not UTF-8 text"))
        }
        return .success(text)
    }

    static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}

/// Where the daemon's configuration comes from.
///
/// The real one is ``ConfigDirectory``; tests hand in loaded configs.
public protocol ConfigSource: Sendable {
    /// Reads and validates the whole configuration; throws only when it cannot be read at all.
    func load() throws(ConfigDirectory.Unreadable) -> ConfigLoader.Loaded
}

extension ConfigDirectory: ConfigSource {}
