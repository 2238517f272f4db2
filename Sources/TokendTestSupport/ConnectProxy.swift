import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A small HTTP CONNECT proxy on 127.0.0.1 for tests: it opens a tunnel to a loopback target for each CONNECT and
/// counts them.
///
/// Anything but CONNECT, or a target off the loopback, gets an error and the connection closed.
public final class ConnectProxy: Sendable {
    private struct State {
        var channel: (any Channel)?
        var port = 0
        var targets: [String] = []
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    public var port: Int { state.withLockedValue { $0.port } }

    /// How many tunnels were opened.
    public var tunnelCount: Int { state.withLockedValue { $0.targets.count } }

    /// The `host:port` of every tunnel opened, in order.
    public var targets: [String] { state.withLockedValue { $0.targets } }

    public func start() async throws {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ConnectHandler(proxy: self))
                }
            }
        let channel = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
        state.withLockedValue {
            $0.channel = channel
            $0.port = channel.localAddress?.port ?? 0
        }
    }

    public func stop() async {
        let channel = state.withLockedValue { $0.channel }
        try? await channel?.close()
    }

    fileprivate func opened(_ target: String) {
        state.withLockedValue { $0.targets.append(target) }
    }

    /// Reads the CONNECT head, connects, answers 200, then relays bytes both ways.
    private final class ConnectHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        let proxy: ConnectProxy
        var pending = ByteBuffer()
        var connecting = false
        var peer: (any Channel)?

        init(proxy: ConnectProxy) {
            self.proxy = proxy
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            if let peer {
                peer.writeAndFlush(buffer, promise: nil)
                return
            }
            pending.writeBuffer(&buffer)
            guard !connecting else { return }
            let text = String(buffer: pending)
            guard let headEnd = text.range(of: "\r\n\r\n") else {
                if pending.readableBytes > 8192 { context.close(promise: nil) }
                return
            }
            let requestLine = text[..<headEnd.lowerBound].split(separator: "\r\n").first ?? ""
            let parts = requestLine.split(separator: " ")
            pending.moveReaderIndex(forwardBy: text[..<headEnd.upperBound].utf8.count)
            guard parts.count == 3, parts[0] == "CONNECT", let colon = parts[1].lastIndex(of: ":"),
                let port = Int(parts[1][parts[1].index(after: colon)...])
            else {
                refuse(context, "405 Method Not Allowed")
                return
            }
            let host = String(parts[1][..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            guard host == "127.0.0.1" || host == "localhost" || host == "::1" else {
                refuse(context, "403 Forbidden")
                return
            }
            connecting = true
            let client = context.channel
            let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
            let proxy = self.proxy
            let target = "\(host):\(port)"
            ClientBootstrap(group: context.eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(Relay(partner: client))
                    }
                }
                .connect(host: host, port: port)
                .whenComplete { result in
                    let (handler, context) = bound.value
                    switch result {
                    case .success(let channel):
                        proxy.opened(target)
                        handler.peer = channel
                        context.writeAndFlush(
                            handler.wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 Connection Established\r\n\r\n")),
                            promise: nil
                        )
                        if handler.pending.readableBytes > 0 {
                            channel.writeAndFlush(handler.pending, promise: nil)
                            handler.pending.clear()
                        }
                    case .failure:
                        handler.refuse(context, "502 Bad Gateway")
                    }
                }
        }

        func refuse(_ context: ChannelHandlerContext, _ status: String) {
            let answer = ByteBuffer(string: "HTTP/1.1 \(status)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(answer)).whenComplete { _ in channel.close(promise: nil) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            peer?.close(promise: nil)
            context.fireChannelInactive()
        }
    }

    /// Copies what the target sends back to the client.
    private final class Relay: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer

        let partner: any Channel

        init(partner: any Channel) {
            self.partner = partner
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            partner.writeAndFlush(unwrapInboundIn(data), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            partner.close(promise: nil)
            context.fireChannelInactive()
        }
    }
}
