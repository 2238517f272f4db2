import NIOCore

/// Stops reading a connection while its answers are not being read, and closes it when too many wait.
///
/// A caller that pipelines requests and never reads would otherwise have the daemon read, answer and buffer without
/// end. While the channel is not writable (more than its high water mark waits to be written) this handler holds
/// back the `read` that asks the event loop for more bytes, and issues it once the channel is writable again; the
/// fast path stops answering the requests it already has in the same way. Answers that arrive on their own (an event
/// stream, a `min_valid` wait) are not held back: past `maxPendingBytes` waiting the connection is closed.
final class OutputBackpressureHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData

    private let maxPendingBytes: Int
    private var readHeldBack = false

    init(maxPendingBytes: Int) {
        self.maxPendingBytes = maxPendingBytes
    }

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
