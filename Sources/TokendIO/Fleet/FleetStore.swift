import Foundation
import TokendCore

/// One shared instance's row as the database holds it: everything but plaintext.
///
/// `sealed` is what ``FleetCodec`` sealed (nonce, ciphertext and tag); the identity is its associated data.
public struct FleetRow: Sendable, Hashable {
    /// The shared identity: 32 bytes of HMAC (``FleetCodec/identity(instance:fingerprint:)``).
    public var identity: [UInt8]
    /// Goes up by one with each token written.
    public var generation: Int64
    /// The sealed token; nil before the first token was written.
    public var sealed: [UInt8]?
    public var obtainedAt: Date?
    public var expiresAt: Date?
    /// The host that fetched the token.
    public var fetchedBy: String?
    /// The host that holds the lease, if one is held and not yet expired by the database's clock.
    public var leaseHolder: String?
    /// Seconds the lease has left, by the database's clock; nil when no lease is held.
    public var leaseLeft: Double?

    public init(
        identity: [UInt8],
        generation: Int64,
        sealed: [UInt8]? = nil,
        obtainedAt: Date? = nil,
        expiresAt: Date? = nil,
        fetchedBy: String? = nil,
        leaseHolder: String? = nil,
        leaseLeft: Double? = nil
    ) {
        self.identity = identity
        self.generation = generation
        self.sealed = sealed
        self.obtainedAt = obtainedAt
        self.expiresAt = expiresAt
        self.fetchedBy = fetchedBy
        self.leaseHolder = leaseHolder
        self.leaseLeft = leaseLeft
    }
}

/// The outcome of asking for a row's lease.
public enum FleetLease: Sendable, Hashable {
    /// This host holds the lease on the row at this generation: it may fetch, then ``FleetStore/publish``.
    case granted(generation: Int64)
    /// The row moved on to another generation, or another host holds a live lease: the row as it is now.
    case refused(FleetRow)
}

/// What opening the store found.
public enum FleetOpening: Sendable, Hashable {
    /// The table is there at the current schema and its key check matches this host's key.
    case ready
    /// The stored key check differs: this host's fleet key is not the fleet's.
    case keyMismatch
    /// The table's schema is newer than this tokend knows (a newer tokend migrated it).
    case schemaTooNew(found: Int64, known: Int64)
}

/// The fleet's shared rows: PostgreSQL in the daemon (``PostgresFleetStore``), an in-memory twin in tests.
///
/// Every lease is judged by the store's own clock, so hosts with skewed clocks still agree who holds one. A method
/// that cannot reach the store throws; the daemon then runs on its own until ``open(keyCheck:)`` succeeds again.
public protocol FleetStore: Sendable {
    /// Connects, creates the table if missing (or migrates it), and checks the key-check value (storing it when the
    /// table has none yet).
    func open(keyCheck: [UInt8]) async throws -> FleetOpening

    /// The rows of these identities that exist (in any order).
    func read(_ identities: [[UInt8]]) async throws -> [FleetRow]

    /// Takes the lease on the row for `seconds`, atomically, if the row is still at `generation` (0 for a row that
    /// does not exist yet: it is created) and no other host holds a live lease. Taking it again while holding it
    /// renews it.
    func lease(_ identity: [UInt8], holder: String, expecting generation: Int64, for seconds: Double) async throws -> FleetLease

    /// Writes the next generation's token and ends the lease, if `holder` still holds it on the row at `generation`,
    /// then notifies the other hosts. Returns the new generation, or nil if the lease was lost (nothing written).
    func publish(
        _ identity: [UInt8],
        holder: String,
        generation: Int64,
        sealed: [UInt8],
        obtainedAt: Date,
        expiresAt: Date
    ) async throws -> Int64?

    /// Ends `holder`'s lease on the row without a new token (its fetch failed).
    func release(_ identity: [UInt8], holder: String) async throws

    /// Listens for the other hosts' writes: `changed` gets each identity written from now on (LISTEN/NOTIFY);
    /// `lost` is called once if the listening connection ends, after which nothing more arrives.
    func listen(
        changed: @escaping @Sendable ([UInt8]) -> Void,
        lost: @escaping @Sendable (any Error) -> Void
    ) async throws

    /// Closes every connection.
    func shutdown() async
}
