import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// A datagram socket bound at a path, to stand in for systemd's `NOTIFY_SOCKET` in tests.
///
/// Collects each message (one datagram, newline-separated assignments) in arrival order.
public final class NotifySocketListener: Sendable {
    public let path: String
    private let fd: Int32
    private let messages = NIOLockedValueBox<[String]>([])
    private let closed = NIOLockedValueBox(false)

    /// `onMessage` runs on the listener's thread as each datagram arrives, before the next one is read.
    public init(path: String, onMessage: (@Sendable (String) -> Void)? = nil) throws {
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: path.utf8)
            buffer[path.utf8.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            Glibc.close(fd)
            throw POSIXError(.init(rawValue: errno) ?? .EIO)
        }
        // A receive timeout lets the reader thread notice close().
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.path = path
        self.fd = fd
        let thread = Thread { [messages, closed] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while !closed.withLockedValue({ $0 }) {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count > 0 {
                    let text = String(decoding: buffer[0..<count], as: UTF8.self)
                    onMessage?(text)
                    messages.withLockedValue { $0.append(text) }
                }
            }
            Glibc.close(fd)
        }
        thread.start()
    }

    /// Every message received so far.
    public var received: [String] { messages.withLockedValue { $0 } }

    /// Every assignment received so far (`READY=1`, `STATUS=…`), messages split at newlines.
    public var assignments: [String] {
        received.flatMap { $0.split(separator: "\n").map(String.init) }
    }

    public func close() {
        closed.withLockedValue { $0 = true }
        unlink(path)
    }
}
