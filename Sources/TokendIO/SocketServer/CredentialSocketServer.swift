import CLinuxShims
import NIOCore
import NIOPosix
import TokendCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `credentials.sock` (SPEC §10): systemd's `LoadCredential=ID:/run/tokend/credentials.sock` connects, tokend writes
/// the raw token or nothing, and closes.
///
/// Who asks is read from the peer's *address* alone (systemd binds `\0<random>/unit/<unit>/<ID>` before it connects),
/// which any process that can connect could choose: the socket must let only the service manager connect (mode 0600,
/// see ``bind(path:mode:answer:)``). Nothing is read from the client, and a write that does not finish within
/// `writeTimeout` closes the connection.
public final class CredentialSocketServer: Sendable {
    /// Answers a connection from `address` (`sun_path`'s bytes, a leading NUL for an abstract address) by calling
    /// `reply` once, from any thread, with the bytes to write or nil to close without data.
    public typealias Answer = @Sendable (_ address: [UInt8], _ reply: @escaping @Sendable ([UInt8]?) -> Void) -> Void

    private let channel: any Channel
    public let path: String
    private let ownsPath: Bool

    private init(channel: any Channel, path: String, ownsPath: Bool) {
        self.channel = channel
        self.path = path
        self.ownsPath = ownsPath
    }

    /// Binds `path` (replacing a stale socket file) with `mode`, and starts serving.
    ///
    /// 0600 is the mode to use: systemd's manager runs as root, which connects whatever the mode, and no other user
    /// may, since the address it names its unit by is the client's own choice.
    public static func bind(
        path: String,
        mode: UInt16 = 0o600,
        writeTimeout: TimeAmount = .seconds(2),
        answer: @escaping Answer
    ) async throws -> CredentialSocketServer {
        try UnixSocketServer.removeStaleSocket(at: path)
        let channel: any Channel
        do {
            let previous = umask(0o177)
            defer { umask(previous) }
            channel = try await bootstrap(writeTimeout: writeTimeout, answer: answer)
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: false).get()
        } catch let error as IOError {
            throw UnixSocketServer.SetupError(
                path: path,
                reason: "bind failed: \(String(cString: strerror(error.errnoCode)))",
                errno: error.errnoCode
            )
        }
        do {
            let (directoryPath, name) = UnixSocketServer.split(path)
            let directory = open(directoryPath, tokend_o_path() | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard directory >= 0 else {
                let error = errno
                throw UnixSocketServer.SetupError(
                    path: path,
                    reason: "cannot open its directory: \(String(cString: strerror(error)))",
                    errno: error
                )
            }
            defer { Glibc.close(directory) }
            try UnixSocketServer.setOwnerAndMode(directory: directory, name: name, group: nil, mode: mode)
        } catch let error as UnixSocketServer.SetupError {
            try? await channel.close()
            throw UnixSocketServer.SetupError(path: path, reason: error.reason, errno: error.errno)
        }
        return CredentialSocketServer(channel: channel, path: path, ownsPath: true)
    }

    /// Serves on a listening socket systemd passed (`FileDescriptorName=credentials`); its mode is the socket unit's.
    public static func adopt(
        descriptor: CInt,
        path: String,
        writeTimeout: TimeAmount = .seconds(2),
        answer: @escaping Answer
    ) async throws -> CredentialSocketServer {
        let channel = try await bootstrap(writeTimeout: writeTimeout, answer: answer).withBoundSocket(descriptor).get()
        return CredentialSocketServer(channel: channel, path: path, ownsPath: false)
    }

    private static func bootstrap(writeTimeout: TimeAmount, answer: @escaping Answer) -> ServerBootstrap {
        ServerBootstrap(group: UnixSocketServer.eventLoops)
            .serverChannelOption(.backlog, value: 256)
            // Nothing the client sends is read.
            .childChannelOption(.autoRead, value: false)
            // systemd shuts its writing side at once (SHUT_WR); the answer may come later (a first fetch at
            // start-up), so that end of input must not close the connection.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                let handler = CredentialAnswerHandler()
                let address = peerAddress(of: channel)
                let loop = channel.eventLoop
                // The whole connection, answer and write, is bounded: a client that never reads is closed.
                let deadline = loop.scheduleTask(in: writeTimeout) { channel.close(promise: nil) }
                channel.closeFuture.whenComplete { _ in deadline.cancel() }
                answer(address) { bytes in
                    loop.execute { handler.reply(bytes) }
                }
                return channel.pipeline.addHandler(handler)
            }
    }

    /// The bytes of the peer's `sun_path` (zeros after the name: NIO keeps the address without its length); empty
    /// when the peer has no Unix address.
    static func peerAddress(of channel: any Channel) -> [UInt8] {
        guard case .unixDomainSocket(let unix)? = channel.remoteAddress else { return [] }
        var path = unix.address.sun_path
        return withUnsafeBytes(of: &path) { Array($0) }
    }

    /// Stops accepting, closes the listening socket and removes its file (unless systemd passed it).
    public func close() async {
        try? await channel.close()
        if ownsPath { unlink(path) }
    }
}

/// Writes the answer once both it and the connection are there, then closes.
private final class CredentialAnswerHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private var answer: [UInt8]??
    private var done = false

    /// Called on the channel's event loop.
    func reply(_ bytes: [UInt8]?) {
        answer = .some(bytes)
        finish()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        finish()
    }

    func channelActive(context: ChannelHandlerContext) {
        finish()
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func finish() {
        guard !done, let context, context.channel.isActive, let answer else { return }
        done = true
        let channel = context.channel
        guard let bytes = answer, !bytes.isEmpty else {
            channel.close(promise: nil)
            return
        }
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(bytes: bytes))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
