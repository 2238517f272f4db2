import NIOCore
import NIOHTTP1

/// Closes a connection whose request head (request line and header fields) is not complete `timeout` after its
/// first byte: a head sent a byte every few seconds (slowloris) keeps the idle timeout from ever firing.
///
/// The first handler of a connection, so it sees every byte. The handlers that parse heads tell it when one is
/// complete with the outbound user event ``HeadReceived`` (the fast path for each simple head, ``HeadReporter``
/// after the connection went to SwiftNIO's HTTP/1 pipeline); the next byte read starts the next deadline.
///
/// A keep-alive connection sends many heads, each complete within microseconds: the timer is not scheduled and
/// cancelled for each. One timer at a time runs to the deadline of the head that started it; when it fires it closes
/// the connection if a head is still unfinished past its own deadline, and otherwise waits for the one in progress.
final class RequestHeadDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData

    /// A request head (or a whole request) is complete.
    struct HeadReceived: Sendable {}

    private let timeout: TimeAmount
    /// The event loop's clock (tests pass an `EmbeddedEventLoop`'s).
    private let now: () -> NIODeadline
    /// When the first byte of the unfinished head arrived; nil between requests.
    private var headStarted: NIODeadline?
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount, now: @escaping () -> NIODeadline = { NIODeadline.now() }) {
        self.timeout = timeout
        self.now = now
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if headStarted == nil {
            let started = now()
            headStarted = started
            if timer == nil { schedule(at: started + timeout, context: context) }
        }
        context.fireChannelRead(data)
    }

    private func schedule(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            bound.value.handler.timerFired(context: bound.value.context)
        }
    }

    private func timerFired(context: ChannelHandlerContext) {
        timer = nil
        guard let started = headStarted else { return }
        let deadline = started + timeout
        if now() >= deadline {
            context.close(promise: nil)
        } else {
            schedule(at: deadline, context: context)
        }
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is HeadReceived else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        headStarted = nil
        promise?.succeed()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        headStarted = nil
        context.fireChannelInactive()
    }
}

/// Tells ``RequestHeadDeadlineHandler`` of each head and each request end SwiftNIO's HTTP/1 decoder completes, as
/// soon as it is decoded (before `HTTPServerPipelineHandler` holds a pipelined one back behind an answer that is
/// still coming).
///
/// The end counts too: body bytes start a deadline like head bytes do, and a body that trickles is cut off the same
/// way; a body that arrived whole must not leave a deadline running on a connection that then waits for its next
/// request.
final class HeadReporter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head, .end:
            context.triggerUserOutboundEvent(RequestHeadDeadlineHandler.HeadReceived(), promise: nil)
        case .body:
            break
        }
        context.fireChannelRead(data)
    }
}
