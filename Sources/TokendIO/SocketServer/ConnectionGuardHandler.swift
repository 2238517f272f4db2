import NIOCore
import NIOHTTP1

/// The first handler of every admitted connection: a deadline for each request head, and backpressure on output.
///
/// **Head deadline.** A request head (request line and header fields) must be complete `headTimeout` after its first
/// byte: a head sent a byte every few seconds (slowloris) keeps the idle timeout from ever firing. The handlers that
/// parse heads call ``headReceived()`` when one is complete (the fast path for each simple head, ``HeadReporter``
/// after the connection went to SwiftNIO's HTTP/1 pipeline); the next byte read starts the next deadline. A
/// keep-alive connection sends many heads, each complete within microseconds, so the timer is not scheduled and
/// cancelled for each: one timer at a time runs to the deadline of the head that started it, and when it fires it
/// closes the connection only if a head is still unfinished past its own deadline.
///
/// **Backpressure.** A caller that pipelines requests and never reads would otherwise have the daemon read, answer
/// and buffer without end. While the channel is not writable (more than its high water mark waits to be written) the
/// `read` that asks the event loop for more bytes is held back, and issued once the channel is writable again; the
/// fast path stops answering the requests it already has in the same way. Answers that arrive on their own (an event
/// stream, a `min_valid` wait) are not held back: past `maxPendingBytes` waiting the connection is closed.
///
/// One handler for both, so that every read and write passes one more handler, not two.
final class ConnectionGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData

    private let headTimeout: TimeAmount
    private let maxPendingBytes: Int
    /// The event loop's clock (tests pass an `EmbeddedEventLoop`'s).
    private let now: () -> NIODeadline
    /// When the first byte of the unfinished head arrived; nil between requests.
    private var headStarted: NIODeadline?
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    private var readHeldBack = false

    init(headTimeout: TimeAmount, maxPendingBytes: Int, now: @escaping () -> NIODeadline = { NIODeadline.now() }) {
        self.headTimeout = headTimeout
        self.maxPendingBytes = maxPendingBytes
        self.now = now
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    // MARK: Head deadline

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if headStarted == nil {
            let started = now()
            headStarted = started
            if timer == nil { schedule(at: started + headTimeout, context: context) }
        }
        context.fireChannelRead(data)
    }

    /// A request head (or a whole request) is complete; called on the connection's event loop.
    func headReceived() {
        headStarted = nil
    }

    private func schedule(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) { bound.value.timerFired() }
    }

    private func timerFired() {
        timer = nil
        guard let context, let started = headStarted else { return }
        let deadline = started + headTimeout
        if now() >= deadline {
            context.close(promise: nil)
        } else {
            schedule(at: deadline, context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        headStarted = nil
        context.fireChannelInactive()
    }

    // MARK: Backpressure

    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            readHeldBack = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, readHeldBack {
            readHeldBack = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func flush(context: ChannelHandlerContext) {
        context.flush()
        guard !context.channel.isWritable,
            let pending = try? context.channel.syncOptions?.getOption(.bufferedWritableBytes), pending > maxPendingBytes
        else { return }
        context.close(promise: nil)
    }
}

/// Tells ``ConnectionGuardHandler`` of each head and each request end SwiftNIO's HTTP/1 decoder completes, as soon
/// as it is decoded (before `HTTPServerPipelineHandler` holds a pipelined one back behind an answer that is still
/// coming).
///
/// The end counts too: body bytes start a deadline like head bytes do, and a body that trickles is cut off the same
/// way; a body that arrived whole must not leave a deadline running on a connection that then waits for its next
/// request.
final class HeadReporter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    private let connectionGuard: ConnectionGuardHandler

    init(_ connectionGuard: ConnectionGuardHandler) {
        self.connectionGuard = connectionGuard
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head, .end:
            connectionGuard.headReceived()
        case .body:
            break
        }
        context.fireChannelRead(data)
    }
}
