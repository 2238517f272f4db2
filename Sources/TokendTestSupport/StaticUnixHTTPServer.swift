import NIOCore
import NIOHTTP1
import NIOPosix

/// The benchmark's measure of what SwiftNIO's HTTP/1 stack costs by itself: a server on a Unix socket that answers
/// every request with the same JSON body, on one event loop, with the pipeline tokend's socket uses
/// (`IdleStateHandler`, `configureHTTPServerPipeline` with error handling and without outbound header validation) and a
/// handler that does nothing else.
///
/// What tokend spends beyond it is tokend's own.
public enum StaticUnixHTTPServer {
    /// Binds `path` and serves `body` until the process ends.
    public static func serve(path: String, body: [UInt8]) async throws -> Never {
        try await run(path: path) { pipeline in
            try pipeline.addHandler(IdleStateHandler(readTimeout: .seconds(60)))
            try pipeline.configureHTTPServerPipeline(withErrorHandling: true, withOutboundHeaderValidation: false)
            try pipeline.addHandler(Handler(body: body))
        }
    }

    /// One event loop serving `path` with the handlers `setUp` adds, until the process ends.
    private static func run(
        path: String,
        setUp: @escaping @Sendable (ChannelPipeline.SynchronousOperations) throws -> Void
    ) async throws -> Never {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 512)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try setUp(channel.pipeline.syncOperations) }
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
            .get()
        try await channel.closeFuture.get()
        fatalError("the static server's socket closed")
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        private let body: ByteBuffer
        private var keepAlive = true

        init(body: [UInt8]) {
            self.body = ByteBuffer(bytes: body)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                keepAlive = head.isKeepAlive
            case .body:
                break
            case .end:
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: "application/json")
                headers.add(name: "Content-Length", value: String(body.readableBytes))
                if !keepAlive { headers.add(name: "Connection", value: "close") }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
                if keepAlive {
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                } else {
                    let channel = context.channel
                    context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
                }
            }
        }
    }

    /// The floor under `serve`: SwiftNIO's channel and event loop with no HTTP handler at all.
    ///
    /// Every request's end (`\r\n\r\n`) is answered with the same pre-built response bytes. No server on SwiftNIO can
    /// be faster than this; it is not an HTTP server (it parses nothing), only the benchmark's measure of the event
    /// loop's own cost. With `decode`, NIOHTTP1's request decoder (llhttp) runs first and each request's end is
    /// answered: what the decoder alone costs (decision 0006).
    public static func serveRaw(path: String, body: [UInt8], decode: Bool = false) async throws -> Never {
        var response = ByteBuffer()
        response.writeString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n")
        response.writeBytes(body)
        try await run(path: path) { [response] pipeline in
            if decode {
                try pipeline.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
                try pipeline.addHandler(DecodedHandler(response: response))
            } else {
                try pipeline.addHandler(RawHandler(response: response))
            }
        }
    }

    private final class RawHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        private let response: ByteBuffer
        private var matched = 0  // how much of "\r\n\r\n" the last bytes matched
        private var pending = 0

        init(response: ByteBuffer) {
            self.response = response
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            bytes.withUnsafeReadableBytes { raw in
                for byte in raw {
                    let want: UInt8 = matched % 2 == 0 ? 13 : 10
                    if byte == want {
                        matched += 1
                        if matched == 4 {
                            pending += 1
                            matched = 0
                        }
                    } else {
                        matched = byte == 13 ? 1 : 0
                    }
                }
            }
            while pending > 0 {
                pending -= 1
                context.write(wrapOutboundOut(response), promise: nil)
            }
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            context.flush()
        }
    }

    private final class DecodedHandler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = ByteBuffer

        private let response: ByteBuffer

        init(response: ByteBuffer) {
            self.response = response
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .end = unwrapInboundIn(data) {
                context.write(wrapOutboundOut(response), promise: nil)
            }
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            context.flush()
        }
    }
}
