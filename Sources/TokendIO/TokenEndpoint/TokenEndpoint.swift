import TokendCore

/// The raw answer of a token endpoint, before the core reads it.
public struct TokenEndpointResponse: Sendable, Hashable {
    public var status: Int
    public var retryAfter: String?
    public var body: [UInt8]
    /// The response's headers, in order (`tokend test` shows them; the parser reads `Content-Type`).
    public var headers: [TokenRequest.Header]

    public init(status: Int, retryAfter: String? = nil, body: [UInt8], headers: [TokenRequest.Header] = []) {
        self.status = status
        self.retryAfter = retryAfter
        self.body = body
        self.headers = headers
    }

    /// The `Content-Type` header, if any.
    public var contentType: String? {
        headers.first { $0.name.lowercased() == "content-type" }?.value
    }
}

/// Sends token requests.
///
/// The real one is ``HTTPTokenEndpoint``; tests use a hand-written twin.
public protocol TokenEndpoint: Sendable {
    /// Sends `request`; transport failures come back as a transient ``FetchFailure``.
    func send(_ request: TokenRequest) async -> Result<TokenEndpointResponse, FetchFailure>

    /// Starts sending `request` and reports the result through `completion`, on any thread. The default runs
    /// ``send(_:)`` in a task; a twin may complete when its test says so.
    func start(_ request: TokenRequest, completion: @escaping @Sendable (Result<TokenEndpointResponse, FetchFailure>) -> Void)

    /// Stops the client; no request may be sent afterwards.
    func shutdown() async
}

extension TokenEndpoint {
    public func start(
        _ request: TokenRequest,
        completion: @escaping @Sendable (Result<TokenEndpointResponse, FetchFailure>) -> Void
    ) {
        Task { completion(await send(request)) }
    }
}
