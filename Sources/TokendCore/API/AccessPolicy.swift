/// Who is asking, from the socket's peer credentials (`SO_PEERCRED`, read when the connection is accepted).
public struct PeerCredentials: Sendable, Hashable, CustomStringConvertible {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    /// Supplementary groups (from `/proc/<pid>/status`), the primary group included.
    public var groups: Set<UInt32>

    public init(uid: UInt32, gid: UInt32, pid: Int32, groups: Set<UInt32> = []) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.groups = groups.union([gid])
    }

    public var description: String { "uid=\(uid) gid=\(gid) pid=\(pid)" }
}

/// Which callers may read one instance's token: `[access] users/groups`, resolved to ids at load time.
public struct AccessPolicy: Sendable, Hashable {
    public var uids: Set<UInt32>
    public var gids: Set<UInt32>

    public init(uids: Set<UInt32>, gids: Set<UInt32>) {
        self.uids = uids
        self.gids = gids
    }

    public func allows(_ peer: PeerCredentials) -> Bool {
        uids.contains(peer.uid) || !gids.isDisjoint(with: peer.groups)
    }
}

/// Who may use the admin endpoints (refresh, metrics): root, the daemon's own uid, and members of `admin_group`.
public struct AdminPolicy: Sendable, Hashable {
    public var daemonUID: UInt32
    public var adminGID: UInt32?

    public init(daemonUID: UInt32, adminGID: UInt32?) {
        self.daemonUID = daemonUID
        self.adminGID = adminGID
    }

    public func allows(_ peer: PeerCredentials) -> Bool {
        peer.uid == 0 || peer.uid == daemonUID || adminGID.map { peer.groups.contains($0) } == true
    }
}
