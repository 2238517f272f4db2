import NIOHTTP1

#if canImport(Glibc)
import Glibc
#endif

/// Talks HTTP/1.1 to a running tokend over its Unix socket (the CLI's `token`, `status`, `refresh`).
///
/// Plain blocking POSIX calls, one connection per request: a CLI call pays for one connect, one write and the reads,
/// not for an event loop group, a Dispatch semaphore and AsyncHTTPClient's set-up (issue #21).
public struct APIClient: Sendable {
    public let socketPath: String

    public struct Response: Sendable {
        public var status: Int
        public var body: [UInt8]

        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// Why the daemon could not be asked.
    public struct Unreachable: Error, CustomStringConvertible {
        public var description: String
    }

    /// The largest answer read (a status listing of many instances stays far below it).
    static let maxResponseBytes = 16 << 20

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    /// Why nothing can be asked at `path` (missing, permission denied, nothing listening), or nil when a
    /// connection succeeds.
    public static func reachability(of path: String) -> String? {
        switch connect(to: path) {
        case .success(let fd):
            close(fd)
            return nil
        case .failure(let problem):
            return problem.description
        }
    }

    /// A connected, blocking socket to `path`, or why there is none.
    static func connect(to path: String) -> Result<Int32, Unreachable> {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(Unreachable(description: "cannot create a socket: \(String(cString: strerror(errno)))")) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        guard path.utf8.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            return .failure(Unreachable(description: "socket path \(path) is too long"))
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: path.utf8)
            buffer[path.utf8.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result != 0 else { return .success(fd) }
        let code = errno
        close(fd)
        switch code {
        case ENOENT:
            return .failure(
                Unreachable(description: "cannot reach tokend: no socket at \(path) (is tokend running? --socket names another path)")
            )
        case EACCES, EPERM:
            return .failure(
                Unreachable(description: "cannot reach tokend: permission denied on \(path) (is this user in the socket's group?)")
            )
        case ECONNREFUSED: return .failure(Unreachable(description: "cannot reach tokend: nothing is listening on \(path)"))
        default: return .failure(Unreachable(description: "cannot reach tokend at \(path): \(String(cString: strerror(code)))"))
        }
    }

    /// Sends one request; `timeout` bounds the whole exchange (a min_valid request may wait for a refresh).
    public func send(method: HTTPMethod = .GET, path: String, body: [UInt8]? = nil, timeout: Double = 35) throws -> Response {
        let fd = try Self.connect(to: socketPath).get()
        defer { close(fd) }
        var request = Array("\(method.rawValue) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".utf8)
        if let body {
            request += Array("Content-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8)
            request += body
        } else {
            request += Array("\r\n".utf8)
        }
        let deadline = Self.now() + timeout
        do {
            try Self.writeAll(fd, request, deadline: deadline)
            return try Self.readResponse(fd, deadline: deadline)
        } catch let problem as ExchangeProblem {
            throw Unreachable(description: "cannot reach tokend at \(socketPath): \(problem.reason)")
        }
    }

    /// What went wrong after the connection was made.
    struct ExchangeProblem: Error {
        var reason: String
    }

    private static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }

    /// Waits until `fd` is ready for `events`, or throws at the deadline.
    private static func wait(_ fd: Int32, for events: Int16, deadline: Double) throws {
        while true {
            let remaining = deadline - now()
            guard remaining > 0 else { throw ExchangeProblem(reason: "no answer within the timeout") }
            var poller = pollfd(fd: fd, events: events, revents: 0)
            let ready = poll(&poller, 1, Int32(min(remaining * 1000 + 1, Double(Int32.max))))
            if ready > 0 { return }
            if ready < 0, errno != EINTR { throw ExchangeProblem(reason: String(cString: strerror(errno))) }
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], deadline: Double) throws {
        var sent = 0
        while sent < bytes.count {
            try wait(fd, for: Int16(POLLOUT), deadline: deadline)
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw ExchangeProblem(reason: String(cString: strerror(errno)))
            }
            sent += count
        }
    }

    /// Reads one answer: until its `Content-Length` is in (or, without one, until the daemon closes).
    private static func readResponse(_ fd: Int32, deadline: Double) throws -> Response {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        var head: (status: Int, bodyStart: Int, length: Int?, chunked: Bool)?
        while true {
            if let head, let length = head.length, received.count - head.bodyStart >= length {
                return Response(status: head.status, body: Array(received[head.bodyStart..<head.bodyStart + length]))
            }
            try wait(fd, for: Int16(POLLIN), deadline: deadline)
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw ExchangeProblem(reason: String(cString: strerror(errno)))
            }
            if count == 0 {
                guard let head else { throw ExchangeProblem(reason: "the daemon closed the connection before answering") }
                if head.length != nil { throw ExchangeProblem(reason: "the daemon closed the connection mid-answer") }
                let body = Array(received[head.bodyStart...])
                if head.chunked {
                    guard let decoded = dechunk(body) else { throw ExchangeProblem(reason: "a malformed chunked answer") }
                    return Response(status: head.status, body: decoded)
                }
                return Response(status: head.status, body: body)
            }
            received += chunk[0..<count]
            guard received.count <= maxResponseBytes else { throw ExchangeProblem(reason: "the answer is larger than 16 MiB") }
            if head == nil, let end = headEnd(received) {
                head = try parseHead(Array(received[0..<end]), bodyStart: end + 4)
            }
        }
    }

    /// The offset of the blank line (`\r\n\r\n`) that ends the head.
    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4)
        where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index
        }
        return nil
    }

    /// The status line and the framing headers, read as bytes (no String splitting: generic wrappers such as
    /// reversed or split views each cost a metadata lookup by mangled name at their first use in a process).
    private static func parseHead(_ bytes: [UInt8], bodyStart: Int) throws -> (status: Int, bodyStart: Int, length: Int?, chunked: Bool) {
        var lines: [ArraySlice<UInt8>] = []
        var lineStart = 0
        for index in 0..<bytes.count where index + 1 < bytes.count && bytes[index] == 13 && bytes[index + 1] == 10 {
            lines.append(bytes[lineStart..<index])
            lineStart = index + 2
        }
        lines.append(bytes[lineStart...])
        let statusLine = lines[0]
        let prefix = Array("HTTP/1.".utf8)
        guard statusLine.count >= 12, statusLine.starts(with: prefix), statusLine[statusLine.startIndex + 8] == UInt8(ascii: " "),
            let status = Int(String(decoding: statusLine.dropFirst(9).prefix(3), as: UTF8.self))
        else {
            throw ExchangeProblem(reason: "not an HTTP/1 answer")
        }
        var length: Int?
        var chunked = false
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
            var value = line[(colon + 1)...]
            while let first = value.first, first == 32 || first == 9 { value = value.dropFirst() }
            while let last = value.last, last == 32 || last == 9 { value = value.dropLast() }
            let text = String(decoding: value, as: UTF8.self)
            if name == "content-length" {
                guard let parsed = Int(text), parsed >= 0 else { throw ExchangeProblem(reason: "a malformed Content-Length") }
                length = parsed
            } else if name == "transfer-encoding", text.lowercased().contains("chunked") {
                chunked = true
            }
        }
        return (status, bodyStart, chunked ? nil : length, chunked)
    }

    /// A chunked body decoded, or nil when it is malformed.
    static func dechunk(_ bytes: [UInt8]) -> [UInt8]? {
        var output: [UInt8] = []
        var index = 0
        while true {
            guard let lineEnd = (index..<max(index, bytes.count - 1)).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }) else {
                return nil
            }
            var sizeBytes = bytes[index..<lineEnd]
            if let extensionStart = sizeBytes.firstIndex(of: UInt8(ascii: ";")) { sizeBytes = sizeBytes[..<extensionStart] }
            while let last = sizeBytes.last, last == 32 || last == 9 { sizeBytes = sizeBytes.dropLast() }
            guard let size = Int(String(decoding: sizeBytes, as: UTF8.self), radix: 16), size >= 0 else { return nil }
            index = lineEnd + 2
            if size == 0 { return output }
            guard index + size + 2 <= bytes.count else { return nil }
            output += bytes[index..<index + size]
            index += size + 2
        }
    }
}
