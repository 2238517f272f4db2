import CLinuxShims
import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import TokendIO

#if canImport(Glibc)
import Glibc
#endif

/// Supplementary groups of a connecting process, from its `/proc/<pid>/status`, for `[access] groups`.
@Suite(.timeLimit(.minutes(1))) struct PeerGroupsTests {
    static func groups(_ status: String) -> Set<UInt32> {
        PeerGroups.groups(inProcStatus: ArraySlice(Array(status.utf8)))
    }

    @Test func theGroupsLineIsParsed() {
        let status = "Name:\tcurl\nUmask:\t0022\nGid:\t100\t100\t100\t100\nGroups:\t4 24 27 4294967295 \nNStgid:\t1\n"
        #expect(Self.groups(status) == [4, 24, 27, 4_294_967_295])
    }

    @Test func noGroupsAndMissingOrBrokenLinesGiveNone() {
        #expect(Self.groups("Name:\tx\nGroups:\t\nNStgid:\t1\n").isEmpty)
        #expect(Self.groups("Name:\tx\nGid:\t1\n").isEmpty)
        #expect(Self.groups("Groups:\t5\n").isEmpty)  // not at a line start: never the first line of the file
        #expect(Self.groups("Name:\tx\nGroups:\t12 x13 4294967296 14") == [12, 14])
    }

    @Test func ourOwnProcessMatchesGetgroups() {
        var ids = [gid_t](repeating: 0, count: 256)
        let count = getgroups(Int32(ids.count), &ids)
        #expect(count >= 0)
        #expect(PeerGroups.supplementaryGroups(of: getpid()) == Set(ids.prefix(Int(count)).map { UInt32($0) }))
    }

    static func peerGroups(_ ids: [gid_t]) -> Set<UInt32> {
        var list = tokend_peer_groups()
        withUnsafeMutableBytes(of: &list.groups) { raw in
            for (index, id) in ids.enumerated() { raw.storeBytes(of: id, toByteOffset: index * MemoryLayout<gid_t>.stride, as: gid_t.self) }
        }
        return PeerGroups.groups(inPeerGroups: list)
    }

    @Test func peerGroupsAnswersEndWhereTheBufferIsZero() {
        #expect(Self.peerGroups([0, 4, 27]) == [0, 4, 27])  // root's group first, then the rest
        #expect(Self.peerGroups([0]) == [0])
        #expect(Self.peerGroups([5, 9, 4_294_967_294]) == [5, 9, 4_294_967_294])
        #expect(Self.peerGroups((1...256).map { gid_t($0) }) == Set((1...256).map { UInt32($0) }))
    }

    /// The groups `PeerGroups.atConnect` reads for the one connection `connect` makes to a fresh server.
    static func groupsSeen(connect: (String) throws -> Void) async throws -> Set<UInt32>? {
        let path = "/tmp/tokend-peergroups-\(getpid())-\(UUID().uuidString.prefix(8)).sock"
        unlink(path)
        defer { unlink(path) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let seen = group.next().makePromise(of: Set<UInt32>?.self)
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                PeerGroups.atConnect(channel as! any SocketOptionProvider).cascade(to: seen)
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(unixDomainSocketPath: path).get()
        try connect(path)
        let groups = try await seen.futureResult.get()
        try await server.close()
        try await group.shutdownGracefully()
        return groups
    }

    /// A real connection's groups come from the kernel (`SO_PEERGROUPS`), not the `/proc` fallback (nil): this test
    /// process's own (as `getgroups` says), and (next test) a peer's own list for a client run with groups.
    @Test func aConnectedPeersGroupsComeFromTheKernel() async throws {
        let own = try await Self.groupsSeen { path in
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            #expect(fd >= 0)
            defer { close(fd) }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path.utf8) }
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            #expect(connected == 0)
        }
        var ids = [gid_t](repeating: 0, count: 256)
        let count = getgroups(Int32(ids.count), &ids)
        #expect(own == Set(ids.prefix(Int(count)).map { UInt32($0) }))
    }

    @Test(.enabled(if: getuid() == 0, "needs root: setpriv gives the client other groups"))
    func aPeerRunWithOtherGroupsIsSeenWithThem() async throws {
        let client = try await Self.groupsSeen { path in
            let curl = Process()
            curl.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            curl.arguments = ["--groups=0,27,65534", "curl", "-s", "--max-time", "1", "--unix-socket", path, "http://localhost/"]
            try curl.run()
            curl.waitUntilExit()
        }
        #expect(client == [0, 27, 65_534])
    }
}
