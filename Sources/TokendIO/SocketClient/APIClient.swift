import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#endif

/// Talks HTTP/1.1 to a running tokend over its Unix socket (the CLI's `token`, `status`, `refresh`).
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

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    /// Why nothing can be asked at `path` (missing, permission denied, nothing listening), or nil when a
    /// connection succeeds.
    public static func reachability(of path: String) -> String? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return "cannot create a socket: \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        guard path.utf8.count < MemoryLayout.size(ofValue: address.sun_path) else {
            return "socket path \(path) is too long"
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: path.utf8)
            buffer[path.utf8.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result != 0 else { return nil }
        switch errno {
        case ENOENT: return "cannot reach tokend: no socket at \(path) (is tokend running? --socket names another path)"
        case EACCES, EPERM: return "cannot reach tokend: permission denied on \(path) (is this user in the socket's group?)"
        case ECONNREFUSED: return "cannot reach tokend: nothing is listening on \(path)"
        case let code: return "cannot reach tokend at \(path): \(String(cString: strerror(code)))"
        }
    }

    /// Sends one request; `timeout` bounds the whole exchange (a min_valid request may wait for a refresh).
    public func send(method: HTTPMethod = .GET, path: String, body: [UInt8]? = nil, timeout: Double = 35) async throws -> Response {
        if let problem = Self.reachability(of: socketPath) { throw Unreachable(description: problem) }
        guard let url = URL(httpURLWithSocketPath: socketPath, uri: path) else {
            throw Unreachable(description: "cannot make a URL for socket \(socketPath)")
        }
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            var request = HTTPClientRequest(url: url.absoluteString)
            request.method = method
            if let body {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: body))
            }
            let response = try await client.execute(request, timeout: .milliseconds(Int64(timeout * 1000)))
            let collected = try await response.body.collect(upTo: 16 << 20)
            try await client.shutdown()
            return Response(status: Int(response.status.code), body: Array(buffer: collected))
        } catch {
            try? await client.shutdown()
            if error is Unreachable { throw error }
            throw Unreachable(description: "cannot reach tokend at \(socketPath): \(error)")
        }
    }
}
