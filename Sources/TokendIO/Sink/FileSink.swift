import TokendCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes an instance's raw token to its sink file: a temp file in the same directory, fsync, owner/group/mode, rename
/// over the old one.
///
/// Readers see the old token or the new one, never a partial file. Every step is relative to the sink's directory,
/// opened once without following a symbolic link and checked with ``DirectoryTrust`` (issue #18): a local user who
/// may replace the directory cannot point the write or the removal anywhere else.
public enum FileSink {
    public static func write(_ token: Secret, to target: SinkTarget) throws(CacheError) {
        let (directoryPath, name) = split(target.path)
        let directory = try openDirectory(directoryPath)
        defer { close(directory) }
        try replace(
            name,
            in: directory,
            directoryPath: directoryPath,
            with: Array(token.revealed.utf8),
            mode: target.mode,
            uid: target.uid,
            gid: target.gid
        )
    }

    /// Replaces the file `name` in the open `directory` with `bytes`: a temp file beside it (created, never opened
    /// through a symbolic link), owner and mode, fsync, rename over `name` (which replaces a symbolic link there
    /// instead of following it), fsync of the directory.
    static func replace(
        _ name: String,
        in directory: CInt,
        directoryPath: String,
        with bytes: [UInt8],
        mode: UInt16,
        uid: UInt32? = nil,
        gid: UInt32? = nil
    ) throws(CacheError) {
        let temp = ".\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = openat(directory, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CacheError(operation: "create", path: "\(directoryPath)/\(temp)", errno: errno) }
        var failure: CacheError?
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                failure = CacheError(operation: "write", path: "\(directoryPath)/\(temp)", errno: errno)
                break
            }
            offset += count
        }
        if failure == nil, uid != nil || gid != nil, fchown(fd, uid.map { uid_t($0) } ?? uid_t.max, gid.map { gid_t($0) } ?? gid_t.max) != 0
        {
            failure = CacheError(operation: "chown", path: "\(directoryPath)/\(temp)", errno: errno)
        }
        if failure == nil, fchmod(fd, mode_t(mode)) != 0 {
            failure = CacheError(operation: "chmod", path: "\(directoryPath)/\(temp)", errno: errno)
        }
        if failure == nil, fsync(fd) != 0 { failure = CacheError(operation: "fsync", path: "\(directoryPath)/\(temp)", errno: errno) }
        close(fd)
        if failure == nil, renameat(directory, temp, directory, name) != 0 {
            failure = CacheError(operation: "rename", path: "\(directoryPath)/\(name)", errno: errno)
        }
        if let failure {
            unlinkat(directory, temp, 0)
            throw failure
        }
        // The rename itself survives a crash too.
        fsync(directory)
    }

    /// Removes the sink file; a file or directory that is not there is no error, a directory tokend refuses is.
    public static func remove(_ target: SinkTarget) throws(CacheError) {
        let (directoryPath, name) = split(target.path)
        let directory: CInt
        do {
            directory = try openDirectory(directoryPath)
        } catch {
            if error.errno == ENOENT { return }
            throw error
        }
        defer { close(directory) }
        if unlinkat(directory, name, 0) != 0, errno != ENOENT {
            throw CacheError(operation: "unlink", path: target.path, errno: errno)
        }
    }

    /// The directory part and the file name of an absolute sink path (the config allows no other).
    static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    /// Opens a sink's directory without following a symbolic link in its last component, and refuses one that
    /// ``DirectoryTrust`` does not accept for tokend's effective uid.
    static func openDirectory(_ path: String) throws(CacheError) -> CInt {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        var info = stat()
        guard fd >= 0 else {
            let error = errno
            // O_NOFOLLOW fails with ELOOP on a symbolic link, O_DIRECTORY with ENOTDIR on anything else: say which.
            if error == ELOOP || error == ENOTDIR, lstat(path, &info) == 0,
                let problem = DirectoryTrust.problem(withSinkDirectory: status(info), daemonUID: geteuid())
            {
                throw CacheError(operation: "refusing sink directory", path: path, errno: error, reason: problem)
            }
            throw CacheError(operation: "open sink directory", path: path, errno: error)
        }
        guard fstat(fd, &info) == 0 else {
            let error = errno
            close(fd)
            throw CacheError(operation: "stat sink directory", path: path, errno: error)
        }
        if let problem = DirectoryTrust.problem(withSinkDirectory: status(info), daemonUID: geteuid()) {
            close(fd)
            throw CacheError(operation: "refusing sink directory", path: path, errno: EPERM, reason: problem)
        }
        return fd
    }

    static func status(_ info: stat) -> DirectoryStatus {
        let kind: DirectoryStatus.Kind
        switch info.st_mode & S_IFMT {
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symbolicLink
        default: kind = .other
        }
        return DirectoryStatus(kind: kind, owner: info.st_uid, mode: UInt32(info.st_mode & 0o7777))
    }
}

/// Where the daemon writes tokens for programs that read a file (`sink`).
///
/// The real one is ``FileSinkWriter``; tests use a recording twin.
public protocol TokenSinkWriter: Sendable {
    func write(_ token: Secret, to target: SinkTarget) throws(CacheError)
    /// Removes the sink file; a missing file is no error.
    func remove(_ target: SinkTarget) throws(CacheError)
}

/// Sink files through ``FileSink``.
public struct FileSinkWriter: TokenSinkWriter {
    public init() {}

    public func write(_ token: Secret, to target: SinkTarget) throws(CacheError) {
        try FileSink.write(token, to: target)
    }

    public func remove(_ target: SinkTarget) throws(CacheError) {
        try FileSink.remove(target)
    }
}
