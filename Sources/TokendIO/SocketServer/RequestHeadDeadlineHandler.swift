import NIOCore
import NIOHTTP1

/// Closes a connection whose request head (request line and header fields) is not complete `timeout` after its
/// first byte: a head sent a byte every few seconds (slowloris) keeps the idle timeout from ever firing.
///
/// The first handler of a connection, so it sees every byte. The handlers that parse heads tell it when one is
/// complete with the outbound user event ``HeadReceived`` (the fast path for each simple head, ``HeadReporter``
/// after the connection went to SwiftNIO's HTTP/1 pipeline); the next byte read starts the next deadline.
final class RequestHeadDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData

    /// A request head is complete.
    struct HeadReceived: Sendable {}

    private let timeout: TimeAmount
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if deadline == nil {
            let channel = context.channel
            deadline = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        }
        context.fireChannelRead(data)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is HeadReceived else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        deadline?.cancel()
        deadline = nil
        promise?.succeed()
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }
}

/// Tells ``RequestHeadDeadlineHandler`` of each head SwiftNIO's HTTP/1 decoder completes, as soon as it is decoded
/// (before `HTTPServerPipelineHandler` holds a pipelined one back behind an answer that is still coming).
final class HeadReporter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) {
            context.triggerUserOutboundEvent(RequestHeadDeadlineHandler.HeadReceived(), promise: nil)
        }
        context.fireChannelRead(data)
    }
}
