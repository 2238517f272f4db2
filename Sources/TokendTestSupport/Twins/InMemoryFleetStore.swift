import Foundation
import TokendCore
import TokendIO

/// A ``FleetStore`` twin: the table's rules (leases by the store's clock, compare-and-swap on the generation,
/// notifications to every listener) kept in memory, shared by the daemons of one test.
///
/// `isReachable = false` makes every call throw and ends every listener, as a database that went away.
public final class InMemoryFleetStore: @unchecked Sendable {
    /// The error every call throws while the store is unreachable.
    public struct Unreachable: Error, CustomStringConvertible {
        public var description: String { "connection refused (in-memory fleet store)" }
    }

    private struct Stored {
        var row: FleetRow
        var leaseUntil: Double?
    }

    private let lock = NSLock()
    private let clock: @Sendable () -> Double
    private var rows: [[UInt8]: Stored] = [:]
    private var keyCheck: [UInt8]?
    private var listeners: [(id: Int, changed: @Sendable ([UInt8]) -> Void, lost: @Sendable (any Error) -> Void)] = []
    private var lastListener = 0
    private var reachable = true
    private var failing = 0
    private var callCounts: [String: Int] = [:]

    /// A store whose leases run by `clock`, in seconds (a manual clock's boot time, say).
    public init(clock: @escaping @Sendable () -> Double) {
        self.clock = clock
    }

    /// Whether calls succeed; setting it false ends every listener (each gets `lost`).
    public var isReachable: Bool {
        get { lock.withLock { reachable } }
        set {
            let lost = lock.withLock {
                reachable = newValue
                defer { if !newValue { listeners = [] } }
                return newValue ? [] : listeners.map(\.lost)
            }
            for call in lost { call(Unreachable()) }
        }
    }

    /// Makes the next `count` calls throw while listeners stay, as a database too slow to answer in time.
    public func failCalls(_ count: Int) {
        lock.withLock { failing += count }
    }

    /// Listeners now registered, all hosts together.
    public var listenerCount: Int { lock.withLock { listeners.count } }

    /// Every row (the reserved one aside), as the table holds it.
    public var allRows: [FleetRow] { lock.withLock { rows.values.map(\.row) } }

    /// Calls made, by method name (`read`, `lease`, `publish`, `release`, `open`).
    public func calls(_ method: String) -> Int { lock.withLock { callCounts[method, default: 0] } }

    /// A handle on this store for one host.
    public func host() -> Host { Host(store: self) }

    /// One host's connection to the shared store.
    public final class Host: FleetStore, @unchecked Sendable {
        let store: InMemoryFleetStore
        private let listenerID = NSLock()
        private var ids: [Int] = []

        init(store: InMemoryFleetStore) {
            self.store = store
        }

        public func open(keyCheck: [UInt8]) async throws -> FleetOpening {
            try store.call("open") {
                if store.keyCheck == nil { store.keyCheck = keyCheck }
                return store.keyCheck == keyCheck ? .ready : .keyMismatch
            }
        }

        public func read(_ identities: [[UInt8]]) async throws -> [FleetRow] {
            try store.call("read") { identities.compactMap { store.current($0) } }
        }

        public func lease(_ identity: [UInt8], holder: String, expecting generation: Int64, for seconds: Double) async throws -> FleetLease
        {
            try store.call("lease") {
                let now = store.clock()
                guard var stored = store.rows[identity] else {
                    guard generation == 0 else { return .refused(FleetRow(identity: identity, generation: 0)) }
                    store.rows[identity] = Stored(
                        row: FleetRow(identity: identity, generation: 0, leaseHolder: holder),
                        leaseUntil: now + seconds
                    )
                    return .granted(generation: 0)
                }
                let free = stored.leaseUntil.map { $0 <= now } ?? true || stored.row.leaseHolder == holder
                guard stored.row.generation == generation, free else {
                    return .refused(store.current(identity) ?? stored.row)
                }
                stored.row.leaseHolder = holder
                stored.leaseUntil = now + seconds
                store.rows[identity] = stored
                return .granted(generation: generation)
            }
        }

        public func publish(
            _ identity: [UInt8],
            holder: String,
            generation: Int64,
            sealed: [UInt8],
            obtainedAt: Date,
            expiresAt: Date
        ) async throws -> Int64? {
            let written: Int64? = try store.call("publish") {
                guard var stored = store.rows[identity], stored.row.generation == generation, stored.row.leaseHolder == holder,
                    let until = stored.leaseUntil, until > store.clock()
                else { return nil }
                stored.row.generation += 1
                stored.row.sealed = sealed
                stored.row.obtainedAt = obtainedAt
                stored.row.expiresAt = expiresAt
                stored.row.fetchedBy = holder
                stored.row.leaseHolder = nil
                stored.leaseUntil = nil
                store.rows[identity] = stored
                return stored.row.generation
            }
            if written != nil { store.notify(identity) }
            return written
        }

        public func release(_ identity: [UInt8], holder: String) async throws {
            try store.call("release") {
                guard var stored = store.rows[identity], stored.row.leaseHolder == holder else { return }
                stored.row.leaseHolder = nil
                stored.leaseUntil = nil
                store.rows[identity] = stored
            }
        }

        public func listen(changed: @escaping @Sendable ([UInt8]) -> Void, lost: @escaping @Sendable (any Error) -> Void) async throws {
            let id = try store.call("listen") {
                store.lastListener += 1
                store.listeners.append((store.lastListener, changed, lost))
                return store.lastListener
            }
            listenerID.withLock { ids.append(id) }
        }

        public func shutdown() async {
            let mine = listenerID.withLock { ids }
            store.lock.withLock { store.listeners.removeAll { mine.contains($0.id) } }
        }
    }

    private func call<T>(_ method: String, _ body: () throws -> T) throws -> T {
        try lock.withLock {
            callCounts[method, default: 0] += 1
            guard reachable else { throw Unreachable() }
            if failing > 0 {
                failing -= 1
                throw Unreachable()
            }
            return try body()
        }
    }

    /// The row as a reader sees it, the lease only while it is live (called with the lock held).
    private func current(_ identity: [UInt8]) -> FleetRow? {
        guard let stored = rows[identity] else { return nil }
        var row = stored.row
        let left = stored.leaseUntil.map { $0 - clock() }
        if let left, left > 0 {
            row.leaseLeft = left
        } else {
            row.leaseHolder = nil
            row.leaseLeft = nil
        }
        return row
    }

    /// Like PostgreSQL's NOTIFY: every listener hears it, the writer's own too (it listens on a connection of its own).
    private func notify(_ identity: [UInt8]) {
        let targets = lock.withLock { listeners.map(\.changed) }
        for changed in targets { changed(identity) }
    }
}
