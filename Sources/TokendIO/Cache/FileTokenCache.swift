import CLinuxShims
import TokendCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One JSON file per instance (`<dir>/<name>.json`, mode 0600, directory 0700), written crash-safely.
///
/// Each write is a temp file, fsync, rename and fsync of the directory. Symlinks inside the directory are never
/// followed.
public struct FileTokenCache: TokenCache {
    public let directory: String
    /// Cache files larger than this are corrupt by definition.
    static let maxFileBytes = 1 << 20

    public init(directory: String) {
        self.directory = directory
    }

    /// Creates the directory (0700) if needed, refuses one that is not tokend's own, tightens its mode, and removes
    /// temp files a crash left behind.
    ///
    /// A directory owned by another user, or one its group or others may write, is refused (``DirectoryTrust``): a
    /// cache record planted there would be served as a token, so tightening the mode would be too late.
    public func prepare() throws(CacheError) {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw CacheError(operation: "mkdir", path: directory, errno: errno)
        }
        // The directory itself may be a symlink: DynamicUser= makes /var/lib/tokend one to /var/lib/private/tokend.
        // Only root can place it; the files inside are still opened with O_NOFOLLOW.
        var info = stat()
        guard stat(directory, &info) == 0 else { throw CacheError(operation: "stat", path: directory, errno: errno) }
        let status = DirectoryStatus(
            kind: (info.st_mode & S_IFMT) == S_IFDIR ? .directory : .other,
            owner: info.st_uid,
            mode: UInt32(info.st_mode & 0o7777)
        )
        if let problem = DirectoryTrust.problem(withStateDirectory: status, daemonUID: geteuid()) {
            throw CacheError(operation: "refusing", path: directory, errno: status.kind == .directory ? EPERM : ENOTDIR, reason: problem)
        }
        if info.st_mode & 0o777 != 0o700, chmod(directory, 0o700) != 0 {
            throw CacheError(operation: "chmod", path: directory, errno: errno)
        }
        for name in listDirectory() where name.hasPrefix(".") && name.contains(".tmp-") {
            unlink(path(of: name))
        }
    }

    public func load(instance: String) -> CacheLoadOutcome {
        let file = path(of: "\(instance).json")
        let fd = open(file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 {
            let error = errno
            if error == ENOENT { return .missing }
            if error == ELOOP { return moveAside(file, reason: "is a symlink") }
            return moveAside(file, reason: "cannot be opened: \(String(cString: strerror(error)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            return moveAside(file, reason: "is not a regular file")
        }
        guard info.st_size <= Self.maxFileBytes else { return moveAside(file, reason: "is too large") }
        let bytes = readAll(fd, limit: Int(info.st_size), sizeHint: Int(info.st_size)) ?? []
        guard let record = CacheRecord.decode(bytes, instance: instance) else {
            return moveAside(file, reason: bytes.isEmpty ? "is empty" : "is not a tokend cache record for this instance")
        }
        return .loaded(record)
    }

    /// Batches up to this size are flushed file by file (`fsync`), larger ones with one `syncfs`.
    public static let fsyncEachUpTo = 16

    public func store(_ record: CacheRecord) throws(CacheError) {
        if let (_, failure) = store(batch: [record]).first { throw failure }
    }

    /// Stores several records with two flushes in all instead of two per file: every temp file is written, then one
    /// `syncfs` makes them durable, then each is renamed over its cache file and the directory is synced once.
    ///
    /// A crash leaves each cache file either old or new, never partial (each rename comes after the sync). A batch of
    /// up to ``fsyncEachUpTo`` records uses `fsync` on each file instead, which flushes nothing else of the
    /// filesystem: a refreshed token is served only once its batch is durable, and `syncfs` on a busy filesystem
    /// (a build, a backup) can take seconds. Returns the failures.
    public func store(batch records: [CacheRecord]) -> [(instance: String, error: CacheError)] {
        let syncEach = records.count <= Self.fsyncEachUpTo
        var failures: [(instance: String, error: CacheError)] = []
        var written: [(temp: String, final: String, instance: String)] = []
        var syncHandle: CInt = -1
        defer { if syncHandle >= 0 { close(syncHandle) } }
        for record in records {
            let final = path(of: "\(record.instance).json")
            let temp = path(of: ".\(record.instance).json.tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
            let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                failures.append((record.instance, CacheError(operation: "create", path: temp, errno: errno)))
                continue
            }
            let bytes = record.encoded()
            var offset = 0
            var failure: CacheError?
            while offset < bytes.count {
                let count = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if count < 0 {
                    if errno == EINTR { continue }
                    failure = CacheError(operation: "write", path: temp, errno: errno)
                    break
                }
                offset += count
            }
            if failure == nil, syncEach, fsync(fd) != 0 { failure = CacheError(operation: "fsync", path: temp, errno: errno) }
            if let failure {
                close(fd)
                unlink(temp)
                failures.append((record.instance, failure))
                continue
            }
            if syncHandle < 0, !syncEach { syncHandle = fd } else { close(fd) }
            written.append((temp, final, record.instance))
        }
        if syncHandle >= 0, tokend_syncfs(syncHandle) != 0 {
            let error = errno
            for file in written {
                unlink(file.temp)
                failures.append((file.instance, CacheError(operation: "syncfs", path: file.temp, errno: error)))
            }
            return failures
        }
        for file in written where rename(file.temp, file.final) != 0 {
            failures.append((file.instance, CacheError(operation: "rename", path: file.final, errno: errno)))
            unlink(file.temp)
        }
        if !written.isEmpty { syncDirectory() }
        return failures
    }

    public func remove(instance: String) {
        if unlink(path(of: "\(instance).json")) == 0 {
            syncDirectory()
        }
    }

    /// Instance names that have a cache file.
    public func cachedInstances() -> [String] {
        listDirectory().compactMap { name in
            guard !name.hasPrefix("."), name.hasSuffix(".json") else { return nil }
            return String(name.dropLast(5))
        }
    }

    private func moveAside(_ file: String, reason: String) -> CacheLoadOutcome {
        if rename(file, file + ".corrupt") != 0 {
            unlink(file)
        }
        return .movedAside(reason: reason)
    }

    private func syncDirectory() {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }

    private func path(of name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    private func listDirectory() -> [String] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
