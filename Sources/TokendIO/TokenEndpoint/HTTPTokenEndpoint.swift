import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import TokendCore

/// Token requests over HTTP(S) through AsyncHTTPClient: no redirects followed, bounded response size.
public final class HTTPTokenEndpoint: TokenEndpoint {
    /// Responses larger than this are refused (a token response is a few KiB).
    public static let maxResponseBytes = 1 << 20

    private let client: HTTPClient
    private let timeout: TimeAmount

    public init(connectTimeout: Double, requestTimeout: Double) {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .milliseconds(Int64(connectTimeout * 1000)), read: nil)
        )
        configuration.decompression = .disabled
        // tokend retries with its own backoff and classifies the failure; the pool must fail fast instead of
        // retrying a refused connection until the request deadline.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.httpVersion = .automatic
        self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.timeout = .milliseconds(Int64(requestTimeout * 1000))
    }

    public func send(_ request: TokenRequest) async -> Result<TokenEndpointResponse, FetchFailure> {
        var outgoing = HTTPClientRequest(url: request.url)
        outgoing.method = HTTPMethod(rawValue: request.method)
        for header in request.headers {
            outgoing.headers.add(name: header.name, value: header.value)
        }
        outgoing.body = .bytes(ByteBuffer(bytes: request.body))
        do {
            let deadline = NIODeadline.now() + timeout
            let response = try await client.execute(outgoing, deadline: deadline)
            let body = try await Self.collect(response.body, by: deadline)
            return .success(
                TokenEndpointResponse(
                    status: Int(response.status.code),
                    retryAfter: response.headers.first(name: "Retry-After"),
                    body: Array(buffer: body)
                )
            )
        } catch {
            return .failure(Self.classify(error, host: request.endpointHost))
        }
    }

    /// The whole body by `deadline`. AsyncHTTPClient's deadline covers only the response head: a server that sent
    /// the head and then stalls or drips the body (a `Content-Length` it never fulfils) would otherwise hold the
    /// fetch, and with it the instance's single flight, forever. Cancelling the collection closes the connection.
    static func collect(_ body: HTTPClientResponse.Body, by deadline: NIODeadline) async throws -> ByteBuffer {
        try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask { try await body.collect(upTo: maxResponseBytes) }
            group.addTask {
                try await Task.sleep(nanoseconds: UInt64(max(0, (deadline - .now()).nanoseconds)))
                return nil
            }
            defer { group.cancelAll() }
            guard case let buffer?? = try await group.next() else { throw HTTPClientError.deadlineExceeded }
            return buffer
        }
    }

    public func shutdown() async {
        try? await client.shutdown()
    }

    /// Maps a transport error to a transient failure with a stable code; never includes the request.
    static func classify(_ error: any Error, host: String) -> FetchFailure {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .connectTimeout, .writeTimeout:
                return .timeout("no answer from \(host) in time")
            default:
                return .network("request to \(host) failed: \(error.shortDescription)")
            }
        }
        if error is NIOTooManyBytesError {
            return FetchFailure(
                kind: .transient,
                code: "invalid_response",
                message: "response from \(host) is larger than \(maxResponseBytes) bytes"
            )
        }
        let text = String(String(describing: error).prefix(200))
        return .network("request to \(host) failed: \(text)")
    }
}
