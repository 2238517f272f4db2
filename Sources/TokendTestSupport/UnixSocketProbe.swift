import Foundation

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

/// Writes `text` on a new connection to `path` and returns what comes back until the other side closes (or
/// `timeout` seconds pass without a byte); writes time out the same way, so a server that stops reading fails a
/// test instead of hanging it.
public func exchangeOnUnixSocket(_ path: String, _ text: String, timeout: Int = 5) throws -> String {
    guard let fd = connectUnixSocket(path) else { throw POSIXError(.ECONNREFUSED) }
    defer { close(fd) }
    return exchange(on: fd, text, timeout: timeout)
}

/// Writes `text` on the connected socket `fd` and returns what comes back (``readUntilClosed(_:timeout:)``); the
/// write times out after `timeout` seconds too.
public func exchange(on fd: Int32, _ text: String, timeout: Int = 5) -> String {
    var deadline = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &deadline, socklen_t(MemoryLayout<timeval>.size))
    _ = Array(text.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    return readUntilClosed(fd, timeout: timeout)
}

/// Everything read from `fd` until the other side closes or `timeout` seconds pass without a byte.
public func readUntilClosed(_ fd: Int32, timeout: Int = 5) -> String {
    var deadline = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &deadline, socklen_t(MemoryLayout<timeval>.size))
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { break }
        received += buffer[0..<count]
    }
    return String(decoding: received, as: UTF8.self)
}
