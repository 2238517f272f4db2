#if canImport(Glibc)
import Glibc
#endif

/// Whether a stream socket at `path` accepts a connection right now.
public func unixSocketAcceptsConnections(at path: String) -> Bool {
    guard let fd = connectUnixSocket(path) else { return false }
    close(fd)
    return true
}

/// A stream socket connected to `path`, or nil; the caller closes it.
public func connectUnixSocket(_ path: String) -> Int32? {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    let result = withUnixAddress(path) { connect(fd, $0, $1) }
    guard result == 0 else {
        close(fd)
        return nil
    }
    return fd
}

/// Calls `body` with a `sockaddr_un` for `path` (which must fit in `sun_path`).
public func withUnixAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in
        buffer.copyBytes(from: path.utf8.prefix(buffer.count - 1))
        buffer[min(path.utf8.count, buffer.count - 1)] = 0
    }
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}
