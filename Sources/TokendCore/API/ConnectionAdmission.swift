/// Which connections the socket takes, counted per caller uid, so that one caller never locks the others out
/// (SPEC §8).
///
/// Pure: the socket reads the caller's credentials when it accepts a connection, asks ``admit(uid:isAdmin:)``, and
/// gives the ticket back with ``release(_:)`` when the connection closes. Event streams and waiting requests are
/// connections, so they count against their caller like any other. The rules, in the order they are checked:
///
/// | the connection is refused when                                                   | for        | refusal       |
/// |----------------------------------------------------------------------------------|------------|---------------|
/// | its caller already holds `perCaller` connections                                 | everyone   | `.callerLimit`|
/// | `maxConnections` connections are open                                            | everyone   | `.full`       |
/// | non-admins hold all the shared places (`maxConnections − adminReserve`)          | non-admins | `.full`       |
/// | half the shared places are taken and the caller holds `shared / (callers + 1)`   | non-admins | `.fairShare`  |
///
/// With the defaults (1024, 64 per caller, 64 kept for admins) one uid holds at most 64 connections, 15 busy uids
/// still leave admins their 64, and the fair share only starts to matter when the shared places are half taken: k
/// callers then hold at most k/(k+1) of them, so a caller that holds none finds a place.
public struct ConnectionAdmission: Sendable, Hashable {
    /// How many connections, and for whom.
    public struct Limits: Sendable, Hashable {
        /// Connections open at once, all callers together (`max_connections`).
        public var maxConnections = 1024
        /// Connections one caller uid may hold (`max_connections_per_uid`), admins too.
        public var perCaller = 64
        /// Places only admins may take (`admin_connections`; 1/16 of `max_connections` unless set).
        public var adminReserve = 64

        public init() {}

        public init(maxConnections: Int, perCaller: Int, adminReserve: Int) {
            self.maxConnections = maxConnections
            self.perCaller = perCaller
            self.adminReserve = adminReserve
        }

        /// The places non-admins share.
        public var shared: Int { max(0, maxConnections - adminReserve) }
    }

    /// Why a connection was refused.
    public enum Refusal: String, Sendable, Hashable, CaseIterable {
        /// The caller holds as many connections as one caller may.
        case callerLimit = "too_many_connections"
        /// Every place this caller may take is taken.
        case full = "socket_busy"
        /// The socket is busy and this caller already holds its share.
        case fairShare = "fair_share_reached"
    }

    /// What the socket does with a new connection.
    public enum Decision: Sendable, Hashable {
        /// Serve it; give the ticket back when it closes.
        case admit(Ticket)
        /// Answer with the refusal and close it.
        case refuse(Refusal)
    }

    /// One admitted connection, as it was counted.
    public struct Ticket: Sendable, Hashable {
        public var uid: UInt32
        public var isAdmin: Bool
    }

    public var limits: Limits
    /// Open connections per caller uid (callers with none are not kept).
    public private(set) var perCaller: [UInt32: Int] = [:]
    /// Open connections, all callers.
    public private(set) var total = 0
    /// Open connections of non-admins (in the shared places).
    public private(set) var shared = 0
    /// Non-admin callers holding at least one connection.
    private var sharedCallers: [UInt32: Int] = [:]

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Counts the connection and admits it, or says why not.
    public mutating func admit(uid: UInt32, isAdmin: Bool) -> Decision {
        let held = perCaller[uid, default: 0]
        guard held < limits.perCaller else { return .refuse(.callerLimit) }
        guard total < limits.maxConnections else { return .refuse(.full) }
        if !isAdmin {
            let places = limits.shared
            guard shared < places else { return .refuse(.full) }
            let heldShared = sharedCallers[uid, default: 0]
            // A caller that holds none is never past its share.
            if 2 * shared >= places, heldShared > 0, heldShared >= max(1, places / (sharedCallers.count + 1)) {
                return .refuse(.fairShare)
            }
            shared += 1
            sharedCallers[uid, default: 0] += 1
        }
        perCaller[uid, default: 0] += 1
        total += 1
        return .admit(Ticket(uid: uid, isAdmin: isAdmin))
    }

    /// The connection closed: its place is free again.
    public mutating func release(_ ticket: Ticket) {
        guard let held = perCaller[ticket.uid], held > 0 else { return }
        perCaller[ticket.uid] = held > 1 ? held - 1 : nil
        total -= 1
        if !ticket.isAdmin, let heldShared = sharedCallers[ticket.uid] {
            sharedCallers[ticket.uid] = heldShared > 1 ? heldShared - 1 : nil
            shared -= 1
        }
    }
}
