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

extension UnixSocketServer {
    /// `SO_PEERCRED` of the connecting process, with its supplementary groups (``PeerGroups``) read only when a
    /// decision first needs them; fails when the kernel does not say (then the caller is refused).
    static func peerCredentials(of channel: any Channel) -> EventLoopFuture<PeerCredentials> {
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeFailedFuture(IOError(errnoCode: ENOTSOCK, reason: "SO_PEERCRED"))
        }
        let credentials: EventLoopFuture<tokend_ucred> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET),
            name: SocketOptionName(SO_PEERCRED)
        )
        return credentials.map { credentials in
            // The channel is held strongly: a weak reference would give every channel a side table, and each of the
            // pipeline's retains and releases of it the slow path (3-4 % of a short connection's CPU in `perf`). The
            // handlers that hold the credentials go when the channel closes, and with them the cycle.
            PeerCredentials(uid: credentials.uid, gid: credentials.gid, pid: credentials.pid) {
                PeerGroups.lookUp(provider, pid: credentials.pid)
            }
        }
    }
}

enum PeerGroups {
    /// The peer's supplementary groups, read when a decision first asks.
    ///
    /// `SO_PEERGROUPS` (the groups it had when it connected, whenever they are read), else `/proc/<pid>/status`. On
    /// the connection's event loop (where the socket answers) the socket options are read at once; elsewhere (a reload
    /// re-checking waiters on the scheduler queue) this waits for that loop. A connection that has closed has no
    /// groups left to read: none (only the primary group then counts, which can only refuse more).
    static func lookUp(_ provider: any SocketOptionProvider, pid: Int32) -> Set<UInt32> {
        let future = atConnect(provider)
        let result: Result<Set<UInt32>?, any Error>?
        if provider.eventLoop.inEventLoop {
            // Socket options read on their loop complete at once, and so does what is chained to them.
            let box = NIOLoopBoundBox<Result<Set<UInt32>?, any Error>?>(nil, eventLoop: provider.eventLoop)
            future.whenComplete { box.value = $0 }
            result = box.value
        } else {
            result = Result { try future.wait() }
        }
        switch result {
        case .success(.some(let groups)): return groups
        case .success(.none): return supplementaryGroups(of: pid)
        case .failure, .none: return []
        }
    }

    /// The supplementary groups the peer had when it connected (`SO_PEERGROUPS`, Linux 4.13): taken with the connection
    /// like `SO_PEERCRED`, in one or two system calls, where `/proc/<pid>/status` takes three and a parse and describes
    /// the process holding that pid when it is read.
    ///
    /// nil when the kernel cannot say (an old kernel, more than 256 groups): then `/proc`; failed when the
    /// connection has closed.
    static func atConnect(_ provider: any SocketOptionProvider) -> EventLoopFuture<Set<UInt32>?> {
        let level = SocketOptionLevel(SOL_SOCKET)
        let name = SocketOptionName(tokend_so_peergroups())
        // A read into no bytes succeeds only for a peer without groups; ERANGE says it has some.
        let probe: EventLoopFuture<Void> = provider.unsafeGetSocketOption(level: level, name: name)
        return probe.map { Set<UInt32>?.some([]) }.flatMapError { error in
            guard let error = error as? IOError else { return provider.eventLoop.makeFailedFuture(error) }
            guard error.errnoCode == ERANGE else { return provider.eventLoop.makeSucceededFuture(nil) }
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
