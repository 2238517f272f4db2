import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

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

    /// Sends one request; `timeout` bounds the whole exchange (a min_valid request may wait for a refresh).
    public func send(method: HTTPMethod = .GET, path: String, body: [UInt8]? = nil, timeout: Double = 35) async throws -> Response {
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
