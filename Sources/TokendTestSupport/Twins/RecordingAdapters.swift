import Foundation
import TokendCore
import TokendIO

/// A ``ServiceNotifier`` that keeps every datagram's messages.
public final class RecordingNotifier: ServiceNotifier, @unchecked Sendable {
    private let lock = NSLock()
    private var sent: [[SystemdMessage]] = []

    public init() {}

    public func notify(_ messages: [SystemdMessage]) {
        lock.withLock { sent.append(messages) }
    }

    /// Every datagram, in order.
    public var datagrams: [[SystemdMessage]] { lock.withLock { sent } }

    /// Every message, in order.
    public var messages: [SystemdMessage] { datagrams.flatMap { $0 } }

    /// Each `STATUS=` line, in order.
    public var statuses: [String] {
        messages.compactMap { if case .status(let line) = $0 { line } else { nil } }
    }

    public func count(of message: SystemdMessage) -> Int { messages.count { $0 == message } }

    public func removeAll() { lock.withLock { sent = [] } }
}

/// A ``TokenCache`` in memory, with a log of what was stored and removed.
public final class InMemoryTokenCache: TokenCache, @unchecked Sendable {
    public enum Operation: Sendable, Hashable {
        case store(instance: String, fingerprint: String)
        case remove(String)
    }

    private let lock = NSLock()
    private var records: [String: CacheRecord]
    private var loadOutcomes: [String: CacheLoadOutcome]
    private var log: [Operation] = []
    private var batches = 0
    private var held = false
    private let gate = DispatchSemaphore(value: 0)

    /// A cache holding `records`; `outcomes` override what loading a name finds (a file moved aside).
    public init(records: [CacheRecord] = [], outcomes: [String: CacheLoadOutcome] = [:]) {
        self.records = Dictionary(records.map { ($0.instance, $0) }) { $1 }
        self.loadOutcomes = outcomes
    }

    public func prepare() throws(CacheError) {}

    public func load(instance: String) -> CacheLoadOutcome {
        lock.withLock { loadOutcomes[instance] ?? records[instance].map(CacheLoadOutcome.loaded) ?? .missing }
    }

    public func store(_ record: CacheRecord) throws(CacheError) {
        lock.withLock {
            records[record.instance] = record
            log.append(.store(instance: record.instance, fingerprint: record.token.fingerprint))
        }
    }

    /// Makes the next batch wait (on the writer's queue) until ``releaseWrites()``: a disk that is slow to flush.
    public func holdWrites() {
        lock.withLock { held = true }
    }

    public func releaseWrites() {
        let wasHeld = lock.withLock {
            defer { held = false }
            return held
        }
        if wasHeld { gate.signal() }
    }

    public func store(batch records: [CacheRecord]) -> [(instance: String, error: CacheError)] {
        if lock.withLock({ held }) { gate.wait() }
        lock.withLock { batches += 1 }
        for record in records { try? store(record) }
        return []
    }

    public func remove(instance: String) {
        lock.withLock {
            records[instance] = nil
            log.append(.remove(instance))
        }
    }

    public func record(_ instance: String) -> CacheRecord? { lock.withLock { records[instance] } }

    public var operations: [Operation] { lock.withLock { log } }

    /// How many batches were written (each one flush).
    public var batchCount: Int { lock.withLock { batches } }
}

/// A ``TokenSinkWriter`` that keeps the sink files' contents in memory.
public final class RecordingSinkWriter: TokenSinkWriter, @unchecked Sendable {
    private let lock = NSLock()
    private var files: [String: String] = [:]

    public init() {}

    public func write(_ token: Secret, to target: SinkTarget) throws(CacheError) {
        lock.withLock { files[target.path] = token.revealed }
    }

    public func remove(_ target: SinkTarget) throws(CacheError) {
        _ = lock.withLock { files.removeValue(forKey: target.path) }
    }

    public func contents(of path: String) -> String? { lock.withLock { files[path] } }
}

/// A ``ConfigSource`` whose next load a test sets.
public final class StaticConfigSource: ConfigSource, @unchecked Sendable {
    private let lock = NSLock()
    private var next: Result<ConfigLoader.Loaded, ConfigDirectory.Unreadable>

    public init(_ loaded: ConfigLoader.Loaded) {
        next = .success(loaded)
    }

    public func set(_ loaded: ConfigLoader.Loaded) { lock.withLock { next = .success(loaded) } }

    public func fail(_ error: ConfigDirectory.Unreadable) { lock.withLock { next = .failure(error) } }

    public func load() throws(ConfigDirectory.Unreadable) -> ConfigLoader.Loaded {
        try lock.withLock { next }.get()
    }
}

/// A ``TokenEventStream`` that keeps the events sent on it.
public final class RecordingEventStream: TokenEventStream, @unchecked Sendable {
    private let lock = NSLock()
    private var sent: [[UInt8]] = []
    private var finished = false

    public init() {}

    public var isOpen: Bool { lock.withLock { !finished } }

    public func send(_ bytes: [UInt8]) { lock.withLock { sent.append(bytes) } }

    public func finish() { lock.withLock { finished = true } }

    public var events: [String] { lock.withLock { sent.map { String(decoding: $0, as: UTF8.self) } } }
}
