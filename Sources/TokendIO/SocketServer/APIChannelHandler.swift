import CLinuxShims
import Foundation
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

/// A response that stays open and carries events (`text/event-stream`).
///
/// The real one is ``EventStream``.
public protocol TokenEventStream: AnyObject, Sendable {
    /// Whether the client is still there and the stream not finished.
    var isOpen: Bool { get }
    /// Sends one chunk (an event).
    func send(_ bytes: [UInt8])
    /// Ends the response and closes the connection.
    func finish()
}

/// The socket's event stream: chunks are written on the connection's event loop from any thread; writes after the
/// client left are dropped.
public final class EventStream: TokenEventStream, Sendable {
    private let eventLoop: any EventLoop
    private let channel: any Channel
    private let writePart: @Sendable (HTTPServerResponsePart, Bool) -> Void
    private let finished = NIOLockedValueBox(false)

    init(eventLoop: any EventLoop, channel: any Channel, write: @escaping @Sendable (HTTPServerResponsePart, Bool) -> Void) {
        self.eventLoop = eventLoop
        self.channel = channel
        self.writePart = write
    }

    /// Whether the client is still there and the stream not finished.
    public var isOpen: Bool { channel.isActive && !finished.withLockedValue { $0 } }

    func emit(_ part: HTTPServerResponsePart, flush: Bool) {
        let write = writePart
        eventLoop.execute { write(part, flush) }
    }

    /// Sends one chunk (an event).
    public func send(_ bytes: [UInt8]) {
        guard isOpen else { return }
        emit(.body(.byteBuffer(ByteBuffer(bytes: bytes))), flush: true)
    }

    /// Ends the response and closes the connection (the stream had no length).
    public func finish() {
        let wasFinished = finished.withLockedValue { state in
            defer { state = true }
            return state
        }
        guard !wasFinished else { return }
        let channel = self.channel
        emit(.end(nil), flush: true)
        eventLoop.execute { channel.close(promise: nil) }
    }
}

/// Answers each HTTP request that SwiftNIO's HTTP/1 pipeline parsed (a connection the fast path handed over) through
/// the responder.
///
/// Keep-alive and pipelining are handled by NIO's `HTTPServerPipelineHandler`; this handler closes the connection when
/// the client asked for it.
final class APIChannelHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Request bodies are not used by any endpoint yet; anything larger than this is refused.
    static let maxBodyBytes = 64 * 1024

    private let responder: UnixSocketServer.Responder
    private let maxHeadBytes: Int
    /// Requests answered later (min_valid waits): the idle timeout must not cut them off.
    private var pending = 0
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var bodyBytes = 0
    private let peer: PeerCredentials?

    /// `peer`: the caller's credentials, read when the connection was accepted.
    init(responder: @escaping UnixSocketServer.Responder, maxHeadBytes: Int, peer: PeerCredentials? = nil) {
        self.responder = responder
        self.maxHeadBytes = maxHeadBytes
        self.peer = peer
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            if pending == 0 { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            body = []
            bodyBytes = 0
            if requestHead.headers.contains(name: "upgrade") {
                // The socket speaks HTTP/1.1 only. llhttp parses nothing after an upgrade request's head, so the
                // request cannot simply be answered with the header ignored (RFC 9110 §7.8) and the connection kept:
                // a 400 that says why, and the connection ends. (426 would ask the client to upgrade; 501 is a 5xx,
                // a fault of the server.)
                head = nil
                let response = APIRouter().error(
                    400,
                    "upgrade_not_supported",
                    "this socket speaks HTTP/1.1 only; protocol upgrades are refused"
                )
                write(response, keepAlive: false, context: context)
                return
            }
            let headBytes = requestHead.uri.utf8.count + requestHead.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
            if headBytes > maxHeadBytes {
                head = nil
                let response = APIResponse(
                    status: 431,
                    contentType: "application/json",
                    body: Array(#"{"error":"headers_too_large","message":"request line and headers exceed 16 KiB"}"#.utf8)
                )
                write(response, keepAlive: false, context: context)
            }
        case .body(var buffer):
            bodyBytes += buffer.readableBytes
            if bodyBytes <= Self.maxBodyBytes, let bytes = buffer.readBytes(length: buffer.readableBytes) {
                body += bytes
            }
        case .end:
            guard let requestHead = head else { return }
            head = nil
            let keepAlive = requestHead.isKeepAlive && bodyBytes <= Self.maxBodyBytes
            if bodyBytes > Self.maxBodyBytes {
                let response = APIResponse(
                    status: 413,
                    contentType: "application/json",
                    body: Array(#"{"error":"body_too_large","message":"request body too large"}"#.utf8)
                )
                write(response, keepAlive: keepAlive, context: context)
                return
            }
            let request = APIRequest(
                method: APIMethod(requestHead.method.rawValue),
                target: requestHead.uri,
                accept: requestHead.headers.first(name: "accept"),
                body: body,
                peer: peer
            )
            body = []
            let eventLoop = context.eventLoop
            let bound = NIOLoopBound((handler: self, context: context), eventLoop: eventLoop)
            pending += 1
            let respond: @Sendable (APIResponse) -> Void = { response in
                if eventLoop.inEventLoop {
                    bound.value.handler.pending -= 1
                    bound.value.handler.write(response, keepAlive: keepAlive, context: bound.value.context)
                } else {
                    eventLoop.execute {
                        bound.value.handler.pending -= 1
                        bound.value.handler.write(response, keepAlive: keepAlive, context: bound.value.context)
                    }
                }
            }
            // A stream keeps its request pending (so the idle timeout leaves it alone) until it finishes.
            let channel = context.channel
            let openStream: @Sendable (String) -> EventStream = { contentType in
                let stream = EventStream(eventLoop: eventLoop, channel: channel) { part, flush in
                    guard bound.value.context.channel.isActive else { return }
                    if flush {
                        bound.value.context.writeAndFlush(bound.value.handler.wrapOutboundOut(part), promise: nil)
                    } else {
                        bound.value.context.write(bound.value.handler.wrapOutboundOut(part), promise: nil)
                    }
                }
                stream.emit(.head(ResponseWriter.streamHead(contentType: contentType)), flush: true)
                return stream
            }
            responder(request, respond, openStream)
        }
    }

    fileprivate func write(_ response: APIResponse, keepAlive: Bool, context: ChannelHandlerContext) {
        // The connection may have closed while a min_valid request waited.
        guard context.channel.isActive else { return }
        let head = ResponseWriter.head(of: response, close: !keepAlive)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let channel = context.channel
            context.writeAndFlushPromise(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

extension ChannelHandlerContext {
    fileprivate func writeAndFlushPromise(_ data: NIOAny) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        writeAndFlush(data, promise: promise)
        return promise.futureResult
    }
}
