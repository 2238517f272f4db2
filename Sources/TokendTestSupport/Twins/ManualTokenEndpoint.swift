import Foundation
import TokendCore
import TokendIO

/// A ``TokenEndpoint`` twin: it records every request and answers it through its `responder`, at once; requests the
/// responder leaves unanswered (nil) are held until the test completes them, so a test decides when each fetch ends.
public final class ManualTokenEndpoint: TokenEndpoint, @unchecked Sendable {
    public typealias Outcome = Result<TokenEndpointResponse, FetchFailure>
    public typealias Responder = @Sendable (_ request: TokenRequest, _ number: Int) -> Outcome?

    private let lock = NSLock()
    private var responder: Responder
    private var sent: [TokenRequest] = []
    private var held: [(request: TokenRequest, completion: @Sendable (Outcome) -> Void)] = []
    private var shutDown = false

    /// Answers with `responder` (given each request and its number, from 1); by default every request is held.
    public init(responder: @escaping Responder = { _, _ in nil }) {
        self.responder = responder
    }

    public func respond(with responder: @escaping Responder) {
        lock.withLock { self.responder = responder }
    }

    /// Every request sent so far, in order.
    public var requests: [TokenRequest] { lock.withLock { sent } }

    /// Requests sent to `host` (the token URL's host) so far.
    public func requests(to host: String) -> [TokenRequest] { requests.filter { $0.endpointHost == host } }

    /// How many requests wait for the test.
    public var heldCount: Int { lock.withLock { held.count } }

    public var isShutDown: Bool { lock.withLock { shutDown } }

    public func start(_ request: TokenRequest, completion: @escaping @Sendable (Outcome) -> Void) {
        let answer: Outcome? = lock.withLock {
            sent.append(request)
            let answer = responder(request, sent.count)
            if answer == nil { held.append((request, completion)) }
            return answer
        }
        if let answer { completion(answer) }
    }

    public func send(_ request: TokenRequest) async -> Outcome {
        await withCheckedContinuation { continuation in
            start(request) { continuation.resume(returning: $0) }
        }
    }

    /// Completes the oldest held request (or the one at `index`) with `outcome`; returns its request.
    @discardableResult
    public func complete(_ index: Int = 0, with outcome: Outcome) -> TokenRequest? {
        let taken = lock.withLock { index < held.count ? held.remove(at: index) : nil }
        taken?.completion(outcome)
        return taken?.request
    }

    public func shutdown() async {
        lock.withLock { shutDown = true }
    }

    /// A 200 answer with `{"access_token": token, "token_type": "Bearer", "expires_in": expiresIn}`, written with
    /// Foundation's JSON encoder (not tokend's).
    public static func token(_ token: String, expiresIn: Int) -> Outcome {
        let object: [String: Any] = ["access_token": token, "token_type": "Bearer", "expires_in": expiresIn]
        let body = (try? JSONSerialization.data(withJSONObject: object)).map { Array($0) } ?? []
        return .success(TokenEndpointResponse(status: 200, body: body))
    }

    /// An error answer with an RFC 6749 §5.2 body and, when given, a `Retry-After` value.
    public static func error(status: Int, code: String, retryAfter: String? = nil) -> Outcome {
        let body = (try? JSONSerialization.data(withJSONObject: ["error": code])).map { Array($0) } ?? []
        return .success(TokenEndpointResponse(status: status, retryAfter: retryAfter, body: body))
    }
}
