import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import TokendCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The `[metrics] listen` TCP listener: HTTP/1.1 that answers `GET /metrics` (and `HEAD`) with what the socket's
/// `/metrics` answers, 404 for every other path and 405 for every other method.
///
/// Bounded like the socket: at most ``Limits/maxConnections`` connections (more are answered 503 and closed), a
/// request head must be complete ``Limits/requestHeadTimeout`` after its first byte, an idle connection is closed,
/// and a request body is not read past a few KiB (``ConnectionGuardHandler``, SwiftNIO's HTTP/1 pipeline). It runs on
/// the socket's event loops.
public final class MetricsListener: Sendable {
    /// Makes the exposition text; called on an event loop for each scrape.
    public typealias Render = @Sendable () -> [UInt8]

    /// Limits that keep one scraper (or anyone who reaches the port) from holding the listener.
    public struct Limits: Sendable, Hashable {
        /// Connections open at once; Prometheus holds one per target.
        public var maxConnections = 16
        public var idleTimeout: TimeAmount = .seconds(30)
        public var requestHeadTimeout: TimeAmount = .seconds(10)
        /// Request body bytes read before the connection is closed (a scrape has none).
        public var maxBodyBytes = 4096
        public var maxPendingOutputBytes = 4 << 20

        public init() {}

        /// The defaults with `tokend.toml`'s `request_head_timeout` (seconds).
        public init(requestHeadTimeout: Double) {
            self.requestHeadTimeout = .nanoseconds(Int64(requestHeadTimeout * 1e9))
        }
    }

    private let channel: any Channel
    /// The address bound (with the port the system chose, when port 0 was asked for).
    public let boundAddress: String

    private init(channel: any Channel) {
        self.channel = channel
        boundAddress = channel.localAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
    }

    /// Why the listener could not be bound.
    public struct SetupError: Error, Sendable, CustomStringConvertible {
        public var reason: String
        public var errno: Int32

        public var description: String { reason }
    }

    /// Binds `host` and `port` (an IP address literal; port 0 picks a free one) and starts serving.
    public static func bind(
        host: String,
        port: Int,
        limits: Limits = Limits(),
        render: @escaping Render
    ) async throws(SetupError)
        -> MetricsListener
    {
        do {
            return MetricsListener(channel: try await bootstrap(limits: limits, render: render).bind(host: host, port: port).get())
        } catch let error as IOError {
            throw SetupError(reason: "bind failed: \(String(cString: strerror(error.errnoCode)))", errno: error.errnoCode)
        } catch {
            throw SetupError(reason: "bind failed: \(error)", errno: EADDRNOTAVAIL)
        }
    }

    private static func bootstrap(limits: Limits, render: @escaping Render) -> ServerBootstrap {
        let open = NIOLockedValueBox(0)
        return ServerBootstrap(group: UnixSocketServer.eventLoops)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: false)
            .childChannelInitializer { channel in
                let admitted = open.withLockedValue { count in
                    guard count < limits.maxConnections else { return false }
                    count += 1
                    return true
                }
                let pipeline = channel.pipeline.syncOperations
                guard admitted else {
                    var busy = APIRouter().error(503, "busy", "the metrics listener has \(limits.maxConnections) connections open")
                    busy.headers.append(.init("Retry-After", "1"))
                    return channel.eventLoop.makeCompletedFuture { try pipeline.addHandler(RefusedConnectionHandler(busy)) }
                }
                channel.closeFuture.whenComplete { _ in open.withLockedValue { $0 -= 1 } }
                return channel.eventLoop.makeCompletedFuture {
                    let connectionGuard = ConnectionGuardHandler(
                        idleTimeout: limits.idleTimeout,
                        headTimeout: limits.requestHeadTimeout,
                        maxPendingBytes: limits.maxPendingOutputBytes
                    )
                    try pipeline.addHandler(connectionGuard)
                    try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                    let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
                    try pipeline.addHandler(HeadReporter(connectionGuard), position: .after(decoder))
                    try pipeline.addHandler(MetricsHTTPHandler(render: render, maxBodyBytes: limits.maxBodyBytes))
                }
            }
    }

    /// Stops accepting and closes the listening socket (open connections end with their scrape or their timeout).
    public func close() async {
        try? await channel.close()
    }
}

/// Answers each request of a metrics connection: the exposition for `GET /metrics` and `HEAD /metrics`, 404 and 405
/// otherwise; keep-alive as the client asks.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let render: MetricsListener.Render
    private let maxBodyBytes: Int
    private var head: HTTPRequestHead?
    private var bodyBytes = 0

    init(render: @escaping MetricsListener.Render, maxBodyBytes: Int) {
        self.render = render
        self.maxBodyBytes = maxBodyBytes
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            bodyBytes = 0
        case .body(let buffer):
            bodyBytes += buffer.readableBytes
            if bodyBytes > maxBodyBytes { context.close(promise: nil) }
        case .end:
            guard let requestHead = head else { return }
            head = nil
            answer(requestHead, context: context)
        }
    }

    private func answer(_ request: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        var response: APIResponse
        var withBody = true
        if path != "/metrics" {
            response = APIRouter().error(404, "not_found", "this listener serves GET /metrics only")
        } else if request.method == .GET || request.method == .HEAD {
            response = APIResponse(status: .ok, contentType: TokendMetrics.contentType, body: render())
            withBody = request.method == .GET
        } else {
            response = APIRouter().error(405, "method_not_allowed", "GET or HEAD /metrics")
            response.headers.append(.init("Allow", "GET, HEAD"))
        }
        let keepAlive = request.isKeepAlive
        context.write(wrapOutboundOut(.head(ResponseWriter.head(of: response, close: !keepAlive))), promise: nil)
        if withBody {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        let channel = context.channel
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        if !keepAlive { written.futureResult.whenComplete { _ in channel.close(promise: nil) } }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
