import NIOCore
import TokendCore

/// The whole pipeline of a connection the socket does not take (``ConnectionAdmission`` said no, or the caller's
/// credentials could not be read): one short answer that says why, then the connection closes.
///
/// A reset would tell the caller nothing; the answer is written before anything the caller sent is read.
final class RefusedConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let response: APIResponse
    private var answered = false

    init(_ response: APIResponse) {
        self.response = response
    }

    /// The answer to a connection ``ConnectionAdmission`` refused.
    static func response(for refusal: ConnectionAdmission.Refusal, peer: PeerCredentials, limits: ConnectionAdmission.Limits) -> APIResponse
    {
        let message =
            switch refusal {
            case .callerLimit: "uid \(peer.uid) already holds \(limits.perCaller) connections, the most one caller may"
            case .full: "no connection is free for this caller; try again"
            case .fairShare: "the socket is busy and uid \(peer.uid) holds its share of the connections; try again"
            }
        var response = APIRouter().error(503, refusal.rawValue, message)
        response.headers.append(.init("Retry-After", "1"))
        return response
    }

    /// The answer to a caller whose `SO_PEERCRED` could not be read: without knowing who asks, nothing is served.
    static let unknownCaller = APIRouter().error(403, "unknown_caller", "the caller's credentials (SO_PEERCRED) could not be read")

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { answer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        answer(context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func answer(context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        var bytes: [UInt8] = []
        ResponseWriter.bytes(of: response, close: true, into: &bytes)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(bytes: bytes))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
