import NIOCore
import NIOHTTP1

/// The first handler of every admitted connection: the idle timeout, a deadline for each request head, and
/// backpressure on output.
///
/// **Idle timeout.** Nothing read for `idleTimeout`: an `IdleStateHandler.IdleStateEvent.read` goes up the pipeline
/// (again every `idleTimeout` while nothing is read), as NIO's `IdleStateHandler` sends it; the handlers behind close
/// the connection when no request of theirs is waiting.
///
/// **Head deadline.** A request head (request line and header fields) must be complete `headTimeout` after its first
/// byte: a head sent a byte every few seconds (slowloris) keeps the idle timeout from ever firing. The handlers that
/// parse heads call ``headReceived()`` when one is complete (the fast path for each simple head, ``HeadReporter``
/// after the connection went to SwiftNIO's HTTP/1 pipeline); the next byte read starts the next deadline.
///
/// One timer serves both and is not scheduled per request: it runs to the earlier of the idle and the head deadline
/// as they were when it was set, and when it fires it acts on the deadlines as they are then and sets itself again.
/// It is moved earlier only when a head starts whose deadline comes before it (a `request_head_timeout` shorter than
/// the idle timeout).
///
/// **Backpressure.** A caller that pipelines requests and never reads would otherwise have the daemon read, answer
/// and buffer without end. While the channel is not writable (more than its high water mark waits to be written) the
/// `read` that asks the event loop for more bytes is held back, and issued once the channel is writable again; the
/// fast path stops answering the requests it already has in the same way. Answers that arrive on their own (an event
/// stream, a `min_valid` wait) are not held back: past `maxPendingBytes` waiting the connection is closed.
///
/// One handler for all three, so that every read and write passes one handler where NIO's `IdleStateHandler` was.
final class ConnectionGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData

    private let idleTimeout: TimeAmount
    private let headTimeout: TimeAmount
    private let maxPendingBytes: Int
    /// The event loop's clock (tests pass an `EmbeddedEventLoop`'s).
    private let now: () -> NIODeadline
    private var lastRead: NIODeadline?
    /// When the first byte of the unfinished head arrived; nil between requests.
    private var headStarted: NIODeadline?
    private var timer: (task: Scheduled<Void>, deadline: NIODeadline)?
    private var context: ChannelHandlerContext?
    private var readHeldBack = false

    init(
        idleTimeout: TimeAmount,
        headTimeout: TimeAmount,
        maxPendingBytes: Int,
        now: @escaping () -> NIODeadline = { NIODeadline.now() }
    ) {
        self.idleTimeout = idleTimeout
        self.headTimeout = headTimeout
        self.maxPendingBytes = maxPendingBytes
        self.now = now
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard lastRead == nil else { return }
        let started = now()
        lastRead = started
        schedule(at: started + idleTimeout, context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stop()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    private func stop() {
        timer?.task.cancel()
        timer = nil
        headStarted = nil
    }

    // MARK: Idle timeout and head deadline

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let read = now()
        lastRead = read
        if headStarted == nil {
            headStarted = read
            let deadline = read + headTimeout
            if let timer, timer.deadline > deadline {
                timer.task.cancel()
                schedule(at: deadline, context: context)
            } else if timer == nil {
                schedule(at: deadline, context: context)
            }
        }
        context.fireChannelRead(data)
    }

    /// A request head (or a whole request) is complete; called on the connection's event loop.
    func headReceived() {
        headStarted = nil
    }

    private func schedule(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = (context.eventLoop.scheduleTask(deadline: deadline) { bound.value.timerFired() }, deadline)
    }

    private func timerFired() {
        timer = nil
        guard let context, context.channel.isActive else { return }
        let time = now()
        if let started = headStarted, time >= started + headTimeout {
            context.close(promise: nil)
            return
        }
        var idleDeadline = (lastRead ?? time) + idleTimeout
        if time >= idleDeadline {
            // Counted from here for the next one, as IdleStateHandler does.
            lastRead = time
            idleDeadline = time + idleTimeout
            context.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
            guard context.channel.isActive else { return }
        }
        schedule(at: min(idleDeadline, headStarted.map { $0 + headTimeout } ?? idleDeadline), context: context)
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
