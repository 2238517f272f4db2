import CLinuxShims
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import TokendCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// HTTP/1.1 with keep-alive on a Unix socket, through swift-nio.
///
/// Each request is handed to `responder`, which must not block: it answers at once from a published snapshot, or later
/// (a `min_valid` request waiting for a refresh) by calling the completion from any thread.
public final class UnixSocketServer: Sendable {
    public typealias Responder =
        @Sendable (
            APIRequest,
            _ respond: @escaping @Sendable (APIResponse) -> Void,
            _ openStream: @escaping @Sendable (_ contentType: String) -> EventStream
        ) -> Void

    /// Answers a request at once on the connection's event loop, or returns nil to leave it to the `Responder`.
    ///
    /// For the requests programs make on every call: nothing is allocated to wait for an answer (decision 0006).
    public typealias ImmediateResponder = @Sendable (APIRequest) -> APIResponse?

    /// Why the socket could not be set up.
    public struct SetupError: Error, Sendable, CustomStringConvertible {
        public var path: String
        public var reason: String
        public var errno: Int32

        public var description: String { "\(path): \(reason)" }
    }

    private let channel: any Channel
    public let path: String
    /// Whether the socket file is ours to remove on close (not when systemd passed the socket).
    private let ownsPath: Bool
    /// The open connections by caller and the limits new ones are admitted and served with.
    private let gate: Gate

    /// Limits that keep one client from disturbing the others.
    public struct Limits: Sendable, Hashable {
        /// Request line and headers together; larger heads get 431.
        public var maxHeadBytes = 16 * 1024
        /// A connection with no request in progress and nothing read for this long is closed (``ConnectionGuardHandler``).
        public var idleTimeout: TimeAmount = .seconds(10)
        /// Who may hold how many connections (``ConnectionAdmission``).
        public var connections = ConnectionAdmission.Limits()
        /// A request head must be complete this long after its first byte (``ConnectionGuardHandler``).
        public var requestHeadTimeout: TimeAmount = .seconds(10)
        /// Answers waiting to be written to one connection; past this it is closed (``ConnectionGuardHandler``).
        public var maxPendingOutputBytes = 1 << 20

        public init() {}

        /// The defaults with the limits `tokend.toml` sets (the head deadline in seconds).
        public init(connections: ConnectionAdmission.Limits, requestHeadTimeout: Double) {
            self.connections = connections
            self.requestHeadTimeout = .nanoseconds(Int64(requestHeadTimeout * 1e9))
        }
    }

    /// What tests replace: how the caller's credentials are read, and a moment between `bind` and setting the
    /// socket file's group and mode.
    struct Seams: Sendable {
        var readCredentials: @Sendable (any Channel) -> EventLoopFuture<PeerCredentials> = { UnixSocketServer.peerCredentials(of: $0) }
        var afterBind: @Sendable () -> Void = {}
    }

    private init(channel: any Channel, path: String, ownsPath: Bool, gate: Gate) {
        self.channel = channel
        self.path = path
        self.ownsPath = ownsPath
        self.gate = gate
    }

    /// The limits for connections from now on (a reload changed them); open ones keep theirs.
    public func update(_ limits: Limits) {
        gate.state.withLockedValue { state in
            state.limits = limits
            state.admission.limits = limits.connections
        }
    }

    /// The connections of every caller, and the limits: one lock for all event loops, taken once when a connection
    /// is accepted and once when it closes.
    final class Gate: Sendable {
        struct State {
            var limits: Limits
            var admission: ConnectionAdmission
        }

        let state: NIOLockedValueBox<State>
        let isAdmin: @Sendable (PeerCredentials) -> Bool

        init(limits: Limits, isAdmin: @escaping @Sendable (PeerCredentials) -> Bool) {
            state = NIOLockedValueBox(State(limits: limits, admission: ConnectionAdmission(limits: limits.connections)))
            self.isAdmin = isAdmin
        }

        /// The limits to serve `peer` with, or the answer that refuses it (made after the lock is given back).
        func admit(_ peer: PeerCredentials) -> Result<(Limits, ConnectionAdmission.Ticket), APIResponseError> {
            let isAdmin = isAdmin(peer)
            let (decision, limits) = state.withLockedValue { state in
                (state.admission.admit(uid: peer.uid, isAdmin: isAdmin), state.limits)
            }
            switch decision {
            case .admit(let ticket):
                return .success((limits, ticket))
            case .refuse(let refusal):
                let response = RefusedConnectionHandler.response(for: refusal, peer: peer, limits: limits.connections)
                return .failure(APIResponseError(response: response))
            }
        }

        func release(_ ticket: ConnectionAdmission.Ticket) {
            state.withLockedValue { $0.admission.release(ticket) }
        }
    }

    /// A refusal as an error, to carry it in a `Result`.
    struct APIResponseError: Error {
        var response: APIResponse
    }

    /// Binds `path` (replacing a stale socket file, refusing one a live process listens on) and starts serving.
    public static func bind(
        path: String,
        mode: UInt16,
        group: UInt32? = nil,
        limits: Limits = Limits(),
        isAdmin: @escaping @Sendable (PeerCredentials) -> Bool = { _ in false },
        immediate: ImmediateResponder? = nil,
        responder: @escaping Responder
    ) async throws -> UnixSocketServer {
        try await bind(
            path: path,
            mode: mode,
            group: group,
            limits: limits,
            isAdmin: isAdmin,
            seams: Seams(),
            immediate: immediate,
            responder: responder
        )
    }

    static func bind(
        path: String,
        mode: UInt16,
        group: UInt32? = nil,
        limits: Limits = Limits(),
        isAdmin: @escaping @Sendable (PeerCredentials) -> Bool = { _ in false },
        seams: Seams,
        immediate: ImmediateResponder? = nil,
        responder: @escaping Responder
    ) async throws -> UnixSocketServer {
        try removeStaleSocket(at: path)
        let gate = Gate(limits: limits, isAdmin: isAdmin)
        let channel: any Channel
        do {
            // Created with no access for others, then opened up to `mode`: never more open than configured.
            let previous = umask(0o177)
            defer { umask(previous) }
            channel = try await bootstrap(gate: gate, seams: seams, immediate: immediate, responder: responder)
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: false).get()
        } catch let error as IOError {
            // systemd gets the errno (ERRNO=), the operator a plain reason.
            throw SetupError(path: path, reason: "bind failed: \(String(cString: strerror(error.errnoCode)))", errno: error.errnoCode)
        }
        seams.afterBind()
        do {
            // The socket's directory, opened without following a symlink in its place: the socket file is changed
            // only through it, never by a path that someone who can write the directory may have pointed elsewhere.
            let (directoryPath, name) = split(path)
            let directory = open(directoryPath, tokend_o_path() | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard directory >= 0 else {
                let error = errno
                throw SetupError(path: path, reason: "cannot open its directory: \(String(cString: strerror(error)))", errno: error)
            }
            defer { Glibc.close(directory) }
            try setOwnerAndMode(directory: directory, name: name, group: group, mode: mode)
        } catch let error as SetupError {
            try? await channel.close()
            throw SetupError(path: path, reason: error.reason, errno: error.errno)
        }
        return UnixSocketServer(channel: channel, path: path, ownsPath: true, gate: gate)
    }

    /// The directory and the file name of `path`.
    static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    /// Gives the socket file `name` in `directory` its group and mode through a descriptor of the file itself,
    /// opened without following a symlink and checked to be a socket: a symlink or another file put in its place
    /// after `bind` is refused, never changed (`chmod` by path would change whatever the link points to).
    static func setOwnerAndMode(directory: Int32, name: String, group: UInt32?, mode: UInt16) throws {
        let file = openat(directory, name, tokend_o_path() | O_NOFOLLOW | O_CLOEXEC)
        guard file >= 0 else {
            let error = errno
            throw SetupError(path: name, reason: "cannot open the bound socket: \(String(cString: strerror(error)))", errno: error)
        }
        defer { Glibc.close(file) }
        var info = stat()
        guard fstat(file, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else {
            throw SetupError(
                path: name,
                reason: "is not the socket tokend bound (something was put in its place); not changing it",
                errno: EEXIST
            )
        }
        if let group, fchownat(file, "", uid_t.max, gid_t(group), tokend_at_empty_path()) != 0 {
            let error = errno
            throw SetupError(path: name, reason: "chown to group \(group) failed: \(String(cString: strerror(error)))", errno: error)
        }
        // An O_PATH descriptor cannot be fchmod'ed; its /proc link reaches the same inode without a lookup by name
        // (what glibc's fchmodat(AT_SYMLINK_NOFOLLOW) does).
        guard info.st_mode & 0o777 != mode_t(mode) else { return }
        guard chmod("/proc/self/fd/\(file)", mode_t(mode)) == 0 else {
            let error = errno
            throw SetupError(path: name, reason: "chmod failed: \(String(cString: strerror(error)))", errno: error)
        }
    }

    /// Serves on a listening socket systemd passed (socket activation, `LISTEN_FDS`); its mode and group are the
    /// socket unit's business.
    public static func adopt(
        descriptor: CInt,
        path: String,
        limits: Limits = Limits(),
        isAdmin: @escaping @Sendable (PeerCredentials) -> Bool = { _ in false },
        immediate: ImmediateResponder? = nil,
        responder: @escaping Responder
    ) async throws -> UnixSocketServer {
        let gate = Gate(limits: limits, isAdmin: isAdmin)
        let channel = try await bootstrap(gate: gate, seams: Seams(), immediate: immediate, responder: responder)
            .withBoundSocket(descriptor).get()
        return UnixSocketServer(channel: channel, path: path, ownsPath: false, gate: gate)
    }

    /// The socket's own event loops: one per CPU the daemon may run on (`taskset`, `CPUAffinity=`), at most four.
    ///
    /// NIO's shared group sizes itself by the machine's cores, so on a daemon pinned to one CPU its loops would take
    /// turns, and every answer would pay for a thread switch.
    static let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: min(4, max(1, Int(tokend_allowed_cpus()))))

    private static func bootstrap(
        gate: Gate,
        seams: Seams,
        immediate: ImmediateResponder?,
        responder: @escaping Responder
    ) -> ServerBootstrap {
        ServerBootstrap(group: eventLoops)
            // A caller that reconnects its refused connections in bursts must not fill the accept queue for the
            // others: room for a burst of max_connections (the kernel caps it at net.core.somaxconn, 4096 by
            // default), and 16 accepts per wake-up instead of NIO's 4 (BENCHMARKS.md, "Fairness under attack").
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.allowRemoteHalfClosure, value: false)
            .childChannelInitializer { channel in
                // Who calls decides whether the connection is taken; a caller nobody can name is not.
                seams.readCredentials(channel).map(Optional.some).recover { _ in nil }.flatMapThrowing { peer in
                    let pipeline = channel.pipeline.syncOperations
                    guard let peer else {
                        try pipeline.addHandler(RefusedConnectionHandler(RefusedConnectionHandler.unknownCaller))
                        return
                    }
                    let limits: Limits
                    switch gate.admit(peer) {
                    case .success(let (admitted, ticket)):
                        limits = admitted
                        channel.closeFuture.whenComplete { _ in gate.release(ticket) }
                    case .failure(let refusal):
                        try pipeline.addHandler(RefusedConnectionHandler(refusal.response))
                        return
                    }
                    let connectionGuard = ConnectionGuardHandler(
                        idleTimeout: limits.idleTimeout,
                        headTimeout: limits.requestHeadTimeout,
                        maxPendingBytes: limits.maxPendingOutputBytes
                    )
                    try pipeline.addHandler(connectionGuard)
                    // Simple requests are answered from their bytes; at the first other byte the connection goes
                    // to SwiftNIO's HTTP/1 pipeline and APIChannelHandler (decision 0006).
                    try pipeline.addHandler(
                        FastPathHandler(
                            immediate: immediate,
                            responder: responder,
                            maxHeadBytes: limits.maxHeadBytes,
                            peer: peer,
                            connectionGuard: connectionGuard
                        )
                    )
                }
            }
    }

    /// Stops accepting, closes the listening socket and removes its file.
    public func close() async {
        try? await channel.close()
        if ownsPath { unlink(path) }
    }

    /// A socket file nobody listens on is left over from a crash: remove it.
    ///
    /// One with a listener is another daemon's: refuse.
    static func removeStaleSocket(at path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw SetupError(path: path, reason: "exists and is not a socket", errno: EEXIST)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { Glibc.close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else {
            throw SetupError(path: path, reason: "socket path is longer than \(capacity - 1) bytes", errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: path.utf8)
            buffer[path.utf8.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if connected == 0 {
            throw SetupError(path: path, reason: "another process (a running tokend?) is listening on this socket", errno: EADDRINUSE)
        }
        unlink(path)
    }
}

/// A response that stays open and carries events (`text/event-stream`).
///
/// The real one is ``EventStream``.
public protocol TokenEventStream: AnyObject, Sendable {
    /// Whether the client is still there and the stream not finished.
    var isOpen: Bool { get }
    /// Sends one chunk (an event).
    func send(_ bytes: [UInt8])
    /// Ends the response and closes the connection.
    func finish()
}

/// The socket's event stream: chunks are written on the connection's event loop from any thread; writes after the
/// client left are dropped.
public final class EventStream: TokenEventStream, Sendable {
    private let eventLoop: any EventLoop
    private let channel: any Channel
    private let writePart: @Sendable (HTTPServerResponsePart, Bool) -> Void
    private let finished = NIOLockedValueBox(false)

    init(eventLoop: any EventLoop, channel: any Channel, write: @escaping @Sendable (HTTPServerResponsePart, Bool) -> Void) {
        self.eventLoop = eventLoop
        self.channel = channel
        self.writePart = write
    }

    /// Whether the client is still there and the stream not finished.
    public var isOpen: Bool { channel.isActive && !finished.withLockedValue { $0 } }

    func emit(_ part: HTTPServerResponsePart, flush: Bool) {
        let write = writePart
        eventLoop.execute { write(part, flush) }
    }

    /// Sends one chunk (an event).
    public func send(_ bytes: [UInt8]) {
        guard isOpen else { return }
        emit(.body(.byteBuffer(ByteBuffer(bytes: bytes))), flush: true)
    }

    /// Ends the response and closes the connection (the stream had no length).
    public func finish() {
        let wasFinished = finished.withLockedValue { state in
            defer { state = true }
            return state
        }
        guard !wasFinished else { return }
        let channel = self.channel
        emit(.end(nil), flush: true)
        eventLoop.execute { channel.close(promise: nil) }
    }
}

/// Answers each HTTP request that SwiftNIO's HTTP/1 pipeline parsed (a connection the fast path handed over) through
/// the responder.
///
/// Keep-alive and pipelining are handled by NIO's `HTTPServerPipelineHandler`; this handler closes the connection when
/// the client asked for it.
final class APIChannelHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Request bodies are not used by any endpoint yet; anything larger than this is refused.
    static let maxBodyBytes = 64 * 1024

    private let responder: UnixSocketServer.Responder
    private let maxHeadBytes: Int
    /// Requests answered later (min_valid waits): the idle timeout must not cut them off.
    private var pending = 0
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var bodyBytes = 0
    private let peer: PeerCredentials?

    /// `peer`: the caller's credentials, read when the connection was accepted.
    init(responder: @escaping UnixSocketServer.Responder, maxHeadBytes: Int, peer: PeerCredentials? = nil) {
        self.responder = responder
        self.maxHeadBytes = maxHeadBytes
        self.peer = peer
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            if pending == 0 { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            body = []
            bodyBytes = 0
            if requestHead.headers.contains(name: "upgrade") {
                // The socket speaks HTTP/1.1 only. llhttp parses nothing after an upgrade request's head, so the
                // request cannot simply be answered with the header ignored (RFC 9110 §7.8) and the connection kept:
                // a 400 that says why, and the connection ends. (426 would ask the client to upgrade; 501 is a 5xx,
                // a fault of the server.)
                head = nil
                let response = APIRouter().error(
                    400,
                    "upgrade_not_supported",
                    "this socket speaks HTTP/1.1 only; protocol upgrades are refused"
                )
                write(response, keepAlive: false, context: context)
                return
            }
            let headBytes = requestHead.uri.utf8.count + requestHead.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
            if headBytes > maxHeadBytes {
                head = nil
                let response = APIResponse(
                    status: 431,
                    contentType: "application/json",
                    body: Array(#"{"error":"headers_too_large","message":"request line and headers exceed 16 KiB"}"#.utf8)
                )
                write(response, keepAlive: false, context: context)
            }
        case .body(var buffer):
            bodyBytes += buffer.readableBytes
            if bodyBytes <= Self.maxBodyBytes, let bytes = buffer.readBytes(length: buffer.readableBytes) {
                body += bytes
            }
        case .end:
            guard let requestHead = head else { return }
            head = nil
            let keepAlive = requestHead.isKeepAlive && bodyBytes <= Self.maxBodyBytes
            if bodyBytes > Self.maxBodyBytes {
                let response = APIResponse(
                    status: 413,
                    contentType: "application/json",
                    body: Array(#"{"error":"body_too_large","message":"request body too large"}"#.utf8)
                )
                write(response, keepAlive: keepAlive, context: context)
                return
            }
            let request = APIRequest(
                method: APIMethod(requestHead.method.rawValue),
                target: requestHead.uri,
                accept: requestHead.headers.first(name: "accept"),
                body: body,
                peer: peer
            )
            body = []
            let eventLoop = context.eventLoop
            let bound = NIOLoopBound((handler: self, context: context), eventLoop: eventLoop)
            pending += 1
            let respond: @Sendable (APIResponse) -> Void = { response in
                if eventLoop.inEventLoop {
                    bound.value.handler.pending -= 1
                    bound.value.handler.write(response, keepAlive: keepAlive, context: bound.value.context)
                } else {
                    eventLoop.execute {
                        bound.value.handler.pending -= 1
                        bound.value.handler.write(response, keepAlive: keepAlive, context: bound.value.context)
                    }
                }
            }
            // A stream keeps its request pending (so the idle timeout leaves it alone) until it finishes.
            let channel = context.channel
            let openStream: @Sendable (String) -> EventStream = { contentType in
                let stream = EventStream(eventLoop: eventLoop, channel: channel) { part, flush in
                    guard bound.value.context.channel.isActive else { return }
                    if flush {
                        bound.value.context.writeAndFlush(bound.value.handler.wrapOutboundOut(part), promise: nil)
                    } else {
                        bound.value.context.write(bound.value.handler.wrapOutboundOut(part), promise: nil)
                    }
                }
                stream.emit(.head(ResponseWriter.streamHead(contentType: contentType)), flush: true)
                return stream
            }
            responder(request, respond, openStream)
        }
    }

    fileprivate func write(_ response: APIResponse, keepAlive: Bool, context: ChannelHandlerContext) {
        // The connection may have closed while a min_valid request waited.
        guard context.channel.isActive else { return }
        let head = ResponseWriter.head(of: response, close: !keepAlive)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let channel = context.channel
            context.writeAndFlushPromise(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

extension UnixSocketServer {
    /// `SO_PEERCRED` of the connecting process, and its supplementary groups (``PeerGroups``); fails when the
    /// kernel does not say (then the caller is refused).
    static func peerCredentials(of channel: any Channel) -> EventLoopFuture<PeerCredentials> {
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeFailedFuture(IOError(errnoCode: ENOTSOCK, reason: "SO_PEERCRED"))
        }
        let credentials: EventLoopFuture<tokend_ucred> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET),
            name: SocketOptionName(SO_PEERCRED)
        )
        return credentials.and(PeerGroups.atConnect(provider)).map { credentials, groups in
            PeerCredentials(
                uid: credentials.uid,
                gid: credentials.gid,
                pid: credentials.pid,
                groups: groups ?? PeerGroups.supplementaryGroups(of: credentials.pid)
            )
        }
    }
}

enum PeerGroups {
    /// The supplementary groups the peer had when it connected (`SO_PEERGROUPS`, Linux 4.13): taken with the connection
    /// like `SO_PEERCRED`, in one or two system calls, where `/proc/<pid>/status` takes three and a parse and describes
    /// the process holding that pid when it is read.
    ///
    /// nil when the kernel cannot say (an old kernel, more than 256 groups): then `/proc`.
    static func atConnect(_ provider: any SocketOptionProvider) -> EventLoopFuture<Set<UInt32>?> {
        let level = SocketOptionLevel(SOL_SOCKET)
        let name = SocketOptionName(tokend_so_peergroups())
        // A read into no bytes succeeds only for a peer without groups; ERANGE says it has some.
        let probe: EventLoopFuture<Void> = provider.unsafeGetSocketOption(level: level, name: name)
        return probe.map { Set<UInt32>?.some([]) }.flatMapError { error in
            guard (error as? IOError)?.errnoCode == ERANGE else { return provider.eventLoop.makeSucceededFuture(nil) }
            let list: EventLoopFuture<tokend_peer_groups> = provider.unsafeGetSocketOption(level: level, name: name)
            return list.map { Set<UInt32>?.some(groups(inPeerGroups: $0)) }.recover { _ in nil }
        }
    }

    /// The groups in an `SO_PEERGROUPS` answer from a peer with at least one: the kernel keeps them sorted and
    /// without duplicates, so after the first (which may be 0, root's group) a 0 is the zeroed rest of the buffer.
    static func groups(inPeerGroups list: tokend_peer_groups) -> Set<UInt32> {
        withUnsafeBytes(of: list.groups) { raw in
            let all = raw.bindMemory(to: gid_t.self)
            guard let first = all.first else { return [] }
            return Set([first] + all.dropFirst().prefix { $0 != 0 })
        }
    }

    /// The `Groups:` line of `/proc/<pid>/status`, scanned as bytes: this can run for every connection, and reading
    /// the file into a String and splitting it into lines is a large share of a short connection
    /// (BENCHMARKS.md, "Figures behind code comments").
    static func supplementaryGroups(of pid: Int32) -> Set<UInt32> {
        let fd = open("/proc/\(pid)/status", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        let bytes = readAll(fd, limit: 64 * 1024) ?? []
        return groups(inProcStatus: bytes[...])
    }

    static func groups(inProcStatus status: ArraySlice<UInt8>) -> Set<UInt32> {
        let key = Array("\nGroups:".utf8)
        guard let start = status.indices.first(where: { status[$0...].starts(with: key) }) else { return [] }
        let line = status[(start + key.count)...].prefix { $0 != UInt8(ascii: "\n") }
        let fields = line.split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") })
        return Set(fields.compactMap { UInt32(String(decoding: $0, as: UTF8.self)) })
    }
}

extension ChannelHandlerContext {
    fileprivate func writeAndFlushPromise(_ data: NIOAny) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        writeAndFlush(data, promise: promise)
        return promise.futureResult
    }
}
