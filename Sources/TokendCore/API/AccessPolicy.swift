import Synchronization

/// Who is asking, from the socket's peer credentials (`SO_PEERCRED`, read when the connection is accepted).
///
/// The supplementary groups cost the socket one or two more system calls per connection (more on an old kernel), and
/// most decisions never look at them: a caller whose uid an `[access]` rule names, root, the daemon's own uid, an
/// instance without a rule. So they are read the first time a decision asks for ``groups`` (issue #21), and kept.
public struct PeerCredentials: Sendable, Hashable, CustomStringConvertible {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    private let lookup: GroupLookup

    /// Credentials whose supplementary groups are known already.
    public init(uid: UInt32, gid: UInt32, pid: Int32, groups: Set<UInt32> = []) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.lookup = GroupLookup(known: groups.union([gid]))
    }

    /// Credentials whose supplementary groups `lookUp` reads when a decision first needs them (at most once).
    public init(uid: UInt32, gid: UInt32, pid: Int32, lookUpGroups lookUp: @escaping @Sendable () -> Set<UInt32>) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.lookup = GroupLookup(primary: gid, lookUp)
    }

    /// Supplementary groups, the primary group included: looked up on first use.
    public var groups: Set<UInt32> { lookup.groups }

    /// Whether the groups have been read (tests: a decision that needs no groups does not read them).
    public var groupsWereRead: Bool { lookup.wasRead }

    public var description: String { "uid=\(uid) gid=\(gid) pid=\(pid)" }

    public static func == (lhs: PeerCredentials, rhs: PeerCredentials) -> Bool {
        lhs.uid == rhs.uid && lhs.gid == rhs.gid && lhs.pid == rhs.pid && lhs.groups == rhs.groups
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(uid)
        hasher.combine(gid)
        hasher.combine(pid)
    }
}

/// A peer's groups, read at most once, from whichever thread first asks.
private final class GroupLookup: Sendable {
    private let primary: UInt32
    private let lookUp: (@Sendable () -> Set<UInt32>)?
    private let read: Mutex<Set<UInt32>?>

    init(known: Set<UInt32>) {
        primary = 0
        lookUp = nil
        read = Mutex(known)
    }

    init(primary: UInt32, _ lookUp: @escaping @Sendable () -> Set<UInt32>) {
        self.primary = primary
        self.lookUp = lookUp
        read = Mutex(nil)
    }

    var groups: Set<UInt32> {
        if let groups = read.withLock({ $0 }) { return groups }
        // Looked up outside the lock (it may wait for the connection's event loop); two first askers both look.
        let groups = (lookUp?() ?? []).union([primary])
        return read.withLock { read in
            if read == nil { read = groups }
            return read ?? groups
        }
    }

    var wasRead: Bool { read.withLock { $0 != nil } }
}

/// Which callers may read one instance's token: `[access] users/groups`, resolved to ids at load time.
public struct AccessPolicy: Sendable, Hashable {
    public var uids: Set<UInt32>
    public var gids: Set<UInt32>

    public init(uids: Set<UInt32>, gids: Set<UInt32>) {
        self.uids = uids
        self.gids = gids
    }

    /// Whether the rule names the caller's uid or one of its groups; the supplementary groups are read only when
    /// neither the uid nor the primary group decides.
    public func allows(_ peer: PeerCredentials) -> Bool {
        uids.contains(peer.uid) || gids.contains(peer.gid) || (!gids.isEmpty && !gids.isDisjoint(with: peer.groups))
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

    /// Whether the caller is root, the daemon's uid or in `admin_group`; the supplementary groups are read only when
    /// neither the uid nor the primary group decides.
    public func allows(_ peer: PeerCredentials) -> Bool {
        guard peer.uid != 0, peer.uid != daemonUID else { return true }
        guard let adminGID else { return false }
        return peer.gid == adminGID || peer.groups.contains(adminGID)
    }
}
