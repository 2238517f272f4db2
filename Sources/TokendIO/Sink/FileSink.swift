import TokendCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes an instance's raw token to its sink file: a temp file in the same directory, fsync, owner/group/mode, rename
/// over the old one.
///
/// Readers see the old token or the new one, never a partial file.
public enum FileSink {
    public static func write(_ token: Secret, to target: SinkTarget) throws(CacheError) {
        let directory = target.path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let name = target.path.split(separator: "/").last.map(String.init) ?? "token"
        let temp = "\(directory)/.\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CacheError(operation: "create", path: temp, errno: errno) }
        var failure: CacheError?
        let bytes = Array(token.revealed.utf8)
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                failure = CacheError(operation: "write", path: temp, errno: errno)
                break
            }
            offset += count
        }
        if failure == nil, target.uid != nil || target.gid != nil,
            fchown(fd, target.uid.map { uid_t($0) } ?? uid_t.max, target.gid.map { gid_t($0) } ?? gid_t.max) != 0
        {
            failure = CacheError(operation: "chown", path: temp, errno: errno)
        }
        if failure == nil, fchmod(fd, mode_t(target.mode)) != 0 { failure = CacheError(operation: "chmod", path: temp, errno: errno) }
        if failure == nil, fsync(fd) != 0 { failure = CacheError(operation: "fsync", path: temp, errno: errno) }
        close(fd)
        if failure == nil, rename(temp, target.path) != 0 { failure = CacheError(operation: "rename", path: target.path, errno: errno) }
        if let failure {
            unlink(temp)
            throw failure
        }
    }

    public static func remove(_ target: SinkTarget) {
        unlink(target.path)
    }
}

/// Where the daemon writes tokens for programs that read a file (`sink`).
///
/// The real one is ``FileSinkWriter``; tests use a recording twin.
public protocol TokenSinkWriter: Sendable {
    func write(_ token: Secret, to target: SinkTarget) throws(CacheError)
    func remove(_ target: SinkTarget)
}

/// Sink files through ``FileSink``.
public struct FileSinkWriter: TokenSinkWriter {
    public init() {}

    public func write(_ token: Secret, to target: SinkTarget) throws(CacheError) {
        try FileSink.write(token, to: target)
    }

    public func remove(_ target: SinkTarget) {
        FileSink.remove(target)
    }
}
