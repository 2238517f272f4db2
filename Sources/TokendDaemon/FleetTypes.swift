import Foundation
import TokendCore
import TokendIO

/// The fleet's parts the scheduler is given: the store, the key's codec and this host's name.
public struct FleetAdapter: Sendable {
    public var store: any FleetStore
    public var codec: FleetCodec
    public var hostID: String

    public init(store: any FleetStore, codec: FleetCodec, hostID: String) {
        self.store = store
        self.codec = codec
        self.hostID = hostID
    }
}

/// How this host stands with the fleet's database.
public enum FleetHealth: Sendable, Hashable {
    /// Not opened yet.
    case connecting
    /// Sharing.
    case connected
    /// The database cannot be reached (the error): every instance refreshes on its own until it can.
    case unreachable(String)
    /// This host's fleet key is not the fleet's: it runs on its own and never uses a row.
    case keyMismatch
    /// A newer tokend changed the table: this one runs on its own.
    case schemaTooNew

    /// The state alone, as `/v1/instances` shows it beside the error.
    public var state: String {
        switch self {
        case .connecting: return "connecting"
        case .connected: return "connected"
        case .unreachable: return "unreachable"
        case .keyMismatch: return "key mismatch"
        case .schemaTooNew: return "schema too new"
        }
    }

    /// The error behind an unreachable database.
    public var error: String? {
        if case .unreachable(let error) = self { return error }
        return nil
    }

    /// As `STATUS=` shows it.
    public var summary: String {
        switch self {
        case .connecting: return "connecting"
        case .connected: return "connected"
        case .unreachable(let error): return "unreachable (\(error))"
        case .keyMismatch: return "key mismatch"
        case .schemaTooNew: return "schema too new"
        }
    }
}

/// One shared instance's part in the fleet, kept by the scheduler.
struct FleetMember {
    /// Where the member is in getting a token.
    enum Phase: Equatable {
        /// Nothing in progress.
        case idle
        /// Reading the row, or asking for its lease.
        case deciding
        /// Another host holds the lease: waiting for its write.
        case waiting
        /// This host holds the lease on the row at this generation and is fetching.
        case leased(Int64)
        /// Fetching without the fleet (the database failed, or waiting would let the token lapse).
        case alone
    }

    var identity: [UInt8]
    var fingerprint: String
    /// The generation of the row the served token came from; nil for a token fetched alone or read from the cache.
    var generation: Int64?
    var phase = Phase.idle
    /// Bumped with each new step: an answer for an older one is dropped.
    var ticket = 0
    /// The fingerprint of the token a client invalidated, while its replacement is being found.
    var invalidated: String?
    /// Invalidations answered once the fleet decided: 202 when this host fetches the replacement, the answer for a
    /// stale fingerprint when another host already did.
    var invalidationReplies: [Scheduler.Reply] = []
    var waitTimer: (any DaemonTimer)?
    /// Counts the times this host needed a token; the patience timer of an earlier need is ignored.
    var need = 0
    /// Publishes of this host not yet heard back as notifications (its own listener hears them too).
    var ownWrites = 0
    /// Another host wrote the row while this host was reading it or asking for its lease.
    var heardWrite = false
    /// Fires when waiting any longer on the fleet could let the token lapse (``FleetDecision/patience(current:now:)``).
    var patienceTimer: (any DaemonTimer)?
}

/// What the fleet's store answered, back on the scheduler queue.
public enum FleetEvent: Sendable {
    case read(name: String, ticket: Int, result: Result<FleetRow?, FleetStoreError>, notified: Bool)
    case readMany([FleetReadRequest], Result<[FleetRow], FleetStoreError>)
    /// A store call ended (its slot is free); its answer inside.
    indirect case operationEnded(FleetEvent)
    case leased(name: String, ticket: Int, expected: Int64, result: Result<FleetLease, FleetStoreError>)
    case published(name: String, ticket: Int, result: Result<Int64?, FleetStoreError>)
    case waitOver(name: String, ticket: Int)
    case patienceOver(name: String, need: Int)
    case changed([UInt8])
    case lost(FleetStoreError)
    case reconnectDue
    /// The store was opened; `listening` when this opening also started listening.
    case opened(Result<FleetOpening, FleetStoreError>, listening: Bool)
}

/// One member's row to read, and for which step.
public struct FleetReadRequest: Sendable {
    var name: String
    var ticket: Int
    var notified: Bool
    var identity: [UInt8]
}

/// A store failure, as text (never a secret: the store's errors name the database, not its password).
public struct FleetStoreError: Error, Sendable, CustomStringConvertible {
    public var description: String

    init(_ error: any Error) {
        description = (error as? FleetStoreError)?.description ?? String(describing: error)
    }
}
