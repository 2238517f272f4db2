import NIOCore
import NIOHTTP1
import TokendCore

/// The first handler of every connection (decision 0006): answers the simple requests nearly every caller sends
/// (``SimpleRequestHead``) straight from their bytes, and hands the connection to SwiftNIO's HTTP/1 pipeline and
/// ``APIChannelHandler`` at the first byte it does not recognise, together with every byte not yet answered.
///
/// From then on llhttp parses the connection; the fast path never comes back to it.
///
/// Answers keep the order of the requests: while one waits (a `min_valid` request waiting for a refresh, an event
/// stream), later bytes are only buffered, up to ``maxBufferedWhileWaiting``.
final class FastPathHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Pipelined bytes a client may send behind a request that is still waiting; more closes the connection.
    static let maxBufferedWhileWaiting = 64 * 1024

    private let immediate: UnixSocketServer.ImmediateResponder?
    private let responder: UnixSocketServer.Responder
    private let maxHeadBytes: Int
    private var buffered: ByteBuffer?
    /// A request is being answered (later bytes wait).
    private var waiting = false
    /// Inside `process`: an answer given synchronously must not start another round.
    private var processing = false
    private var closing = false
    private var handedOver = false
    /// The last answer written whole (head and body) with the body it was made from: an immediate answer shares
    /// its body with every caller in the same second, so the same body storage means the same bytes to write.
    private var lastWire: (key: HeadKey, body: [UInt8], bytes: ByteBuffer)?
    /// The caller, read when the connection was accepted.
    private let peer: PeerCredentials?
    /// Told of every complete head (its deadline ends); nil in tests without one.
    private let connectionGuard: ConnectionGuardHandler?

    init(
        immediate: UnixSocketServer.ImmediateResponder? = nil,
        responder: @escaping UnixSocketServer.Responder,
        maxHeadBytes: Int,
        peer: PeerCredentials? = nil,
        connectionGuard: ConnectionGuardHandler? = nil
    ) {
        self.immediate = immediate
        self.responder = responder
        self.maxHeadBytes = maxHeadBytes
        self.peer = peer
        self.connectionGuard = connectionGuard
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            if !waiting { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        var bytes = unwrapInboundIn(data)
        if buffered == nil {
            buffered = bytes
        } else {
            buffered?.writeBuffer(&bytes)
        }
        if waiting {
            guard let buffer = buffered else { return }
            if buffer.readableBytes > Self.maxBufferedWhileWaiting {
                close(context: context)
            } else if case .request = buffer.withUnsafeReadableBytes({ SimpleRequestHead.parse($0, maxHeadBytes: maxHeadBytes) }) {
                // The next head is complete; it only waits its turn.
                connectionGuard?.headReceived()
            }
            return
        }
        process(context: context)
    }

    /// Answers go on once the client reads again (``ConnectionGuardHandler`` holds back reads meanwhile).
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, !waiting, !processing { process(context: context) }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// Answers the complete simple requests in the buffer, in order, until one has to wait or the answers back up
    /// (the channel is not writable: the client does not read them).
    private func process(context: ChannelHandlerContext) {
        processing = true
        defer { processing = false }
        var wrote = false
        while !waiting, !closing, !handedOver, context.channel.isWritable, let buffer = buffered, buffer.readableBytes > 0 {
            let parse = buffer.withUnsafeReadableBytes { SimpleRequestHead.parse($0, maxHeadBytes: maxHeadBytes) }
            switch parse {
            case .incomplete:
                // Answered requests before the unfinished one are not kept: a client whose reads always end inside
                // a request would otherwise grow the buffer by every request it ever sent.
                if buffer.readerIndex > 0 { buffered?.discardReadBytes() }
                if wrote { context.flush() }
                return
            case .notSimple:
                if wrote { context.flush() }
                handOver(context: context)
                return
            case .request(let head):
                buffered?.moveReaderIndex(forwardBy: head.length)
                connectionGuard?.headReceived()
                wrote = true
                answer(head, context: context)
            }
        }
        if let buffer = buffered, buffer.readableBytes == 0 { buffered = nil }
        if wrote, !closing { context.flush() }
    }

    private func answer(_ head: SimpleRequestHead, context: ChannelHandlerContext) {
        let request = APIRequest(method: "GET", target: head.target, accept: head.accept, peer: peer)
        let keepAlive = head.keepAlive
        waiting = true
        if let immediate, let response = immediate(request) {
            answered(response, keepAlive: keepAlive, context: context)
            return
        }
        let eventLoop = context.eventLoop
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: eventLoop)
        let respond: @Sendable (APIResponse) -> Void = { response in
            if eventLoop.inEventLoop {
                bound.value.handler.answered(response, keepAlive: keepAlive, context: bound.value.context)
            } else {
                eventLoop.execute { bound.value.handler.answered(response, keepAlive: keepAlive, context: bound.value.context) }
            }
        }
        let channel = context.channel
        let openStream: @Sendable (String) -> EventStream = { contentType in
            let stream = EventStream(eventLoop: eventLoop, channel: channel) { part, flush in
                bound.value.handler.writeStreamPart(part, flush: flush, context: bound.value.context)
            }
            stream.emit(.head(ResponseWriter.streamHead(contentType: contentType)), flush: true)
            return stream
        }
        responder(request, respond, openStream)
    }

    /// The answer to the request that waited: written, and the buffered requests behind it go on.
    private func answered(_ response: APIResponse, keepAlive: Bool, context: ChannelHandlerContext) {
        waiting = false
        guard context.channel.isActive, !closing else { return }
        let buffer = wire(for: response, close: !keepAlive, allocator: context.channel.allocator)
        if !keepAlive {
            closing = true
            buffered = nil
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        context.write(wrapOutboundOut(buffer), promise: nil)
        if !processing {
            context.flush()
            process(context: context)
        }
    }

    /// `response` as bytes to write; the last one is kept and written again while the answers share their body.
    private func wire(for response: APIResponse, close: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        let key = HeadKey(status: response.status.code, contentType: response.contentType, length: response.body.count, close: close)
        if response.headers.isEmpty, let last = lastWire, last.key == key, Self.sameStorage(last.body, response.body) {
            return last.bytes
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(128 + response.body.count)
        ResponseWriter.bytes(of: response, close: close, into: &bytes)
        var buffer = allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        if response.headers.isEmpty { lastWire = (key, response.body, buffer) }
        return buffer
    }

    /// Whether two arrays share their storage (so hold the same bytes: `a` is kept alive, so its storage cannot have
    /// been freed and reused, and a shared storage is copied before it is changed).
    private static func sameStorage(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in a.baseAddress == b.baseAddress && a.count == b.count } }
    }

    private struct HeadKey: Equatable {
        var status: Int
        var contentType: String
        var length: Int
        var close: Bool
    }

    /// An event stream's parts, chunked, as `HTTPResponseEncoder` writes a response without a length.
    private func writeStreamPart(_ part: HTTPServerResponsePart, flush: Bool, context: ChannelHandlerContext) {
        guard context.channel.isActive, !closing else { return }
        var bytes: [UInt8] = []
        switch part {
        case .head(let head):
            ResponseWriter.streamBytes(contentType: head.headers.first(name: "Content-Type") ?? "application/octet-stream", into: &bytes)
        case .body(.byteBuffer(let chunk)):
            guard chunk.readableBytes > 0 else { return }
            bytes.append(contentsOf: String(chunk.readableBytes, radix: 16).utf8)
            bytes.append(contentsOf: "\r\n".utf8)
            bytes.append(contentsOf: chunk.readableBytesView)
            bytes.append(contentsOf: "\r\n".utf8)
        case .body:
            return
        case .end:
            bytes.append(contentsOf: "0\r\n\r\n".utf8)
        }
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        if flush {
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        } else {
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
    }

    /// From here on SwiftNIO's HTTP/1 pipeline parses the connection, starting with the bytes not yet answered.
    private func handOver(context: ChannelHandlerContext) {
        handedOver = true
        do {
            try context.pipeline.syncOperations.configureHTTPServerPipeline(
                position: .last,
                withErrorHandling: true,
                withOutboundHeaderValidation: false
            )
            if let connectionGuard {
                let decoder = try context.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
                try context.pipeline.syncOperations.addHandler(HeadReporter(connectionGuard), position: .after(decoder))
            }
            try context.pipeline.syncOperations.addHandler(
                APIChannelHandler(responder: responder, maxHeadBytes: maxHeadBytes, peer: peer)
            )
        } catch {
            context.close(promise: nil)
            return
        }
        if let rest = buffered {
            buffered = nil
            context.fireChannelRead(wrapInboundOut(rest))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// The bytes the buffer holds, read or not (for tests).
    var bufferedStorage: Int { buffered.map { $0.readerIndex + $0.readableBytes } ?? 0 }

    private func close(context: ChannelHandlerContext) {
        closing = true
        buffered = nil
        context.close(promise: nil)
    }
}
