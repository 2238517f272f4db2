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
            let response = try await client.execute(outgoing, timeout: timeout)
            let body = try await response.body.collect(upTo: Self.maxResponseBytes)
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
