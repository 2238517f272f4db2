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
        /// Told of each refused connection (outside the lock), for the daemon's summarised refusal log.
        let onRefused: @Sendable (PeerCredentials, ConnectionAdmission.Refusal) -> Void

        init(
            limits: Limits,
            isAdmin: @escaping @Sendable (PeerCredentials) -> Bool,
            onRefused: @escaping @Sendable (PeerCredentials, ConnectionAdmission.Refusal) -> Void = { _, _ in }
        ) {
            state = NIOLockedValueBox(State(limits: limits, admission: ConnectionAdmission(limits: limits.connections)))
            self.isAdmin = isAdmin
            self.onRefused = onRefused
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
                onRefused(peer, refusal)
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
        onRefused: @escaping @Sendable (PeerCredentials, ConnectionAdmission.Refusal) -> Void = { _, _ in },
        immediate: ImmediateResponder? = nil,
        responder: @escaping Responder
    ) async throws -> UnixSocketServer {
        try await bind(
            path: path,
            mode: mode,
            group: group,
            limits: limits,
            isAdmin: isAdmin,
            onRefused: onRefused,
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
        onRefused: @escaping @Sendable (PeerCredentials, ConnectionAdmission.Refusal) -> Void = { _, _ in },
        seams: Seams,
        immediate: ImmediateResponder? = nil,
        responder: @escaping Responder
    ) async throws -> UnixSocketServer {
        try removeStaleSocket(at: path)
        let gate = Gate(limits: limits, isAdmin: isAdmin, onRefused: onRefused)
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
        onRefused: @escaping @Sendable (PeerCredentials, ConnectionAdmission.Refusal) -> Void = { _, _ in },
        immediate: ImmediateResponder? = nil,
        responder: @escaping Responder
    ) async throws -> UnixSocketServer {
        let gate = Gate(limits: limits, isAdmin: isAdmin, onRefused: onRefused)
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
