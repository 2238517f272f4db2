import Dispatch
import Logging
import Synchronization
import TokendCore
import TokendIO

/// Cache writes, batched: the records not yet taken by the I/O queue, the latest per instance.
///
/// The queue writes whatever has gathered as one batch with one flush, so that a round of many tokens is not as many
/// fsyncs one after another. After each batch, `durable` is told which records it held (whether or not their write
/// succeeded: a failure is logged, and a disk that cannot be written must not stop tokens from being served).
final class CacheWriter: Sendable {
    typealias Written = Scheduler.StoredToken

    /// Cache batches of at least this many records are followed by a memory trim.
    static let trimAfterBatch = 1_000

    private let cache: any TokenCache
    private let queue: DispatchQueue
    private let logger: Logger
    private let trimMemory: @Sendable () -> Void
    private let durable: @Sendable ([Written]) -> Void
    private let pending = Mutex(Pending())

    private struct Pending {
        var records: [String: (record: CacheRecord, generation: Int)] = [:]
        var flushQueued = false
    }

    init(
        cache: any TokenCache,
        queue: DispatchQueue,
        logger: Logger,
        trimMemory: @escaping @Sendable () -> Void,
        durable: @escaping @Sendable ([Written]) -> Void
    ) {
        self.cache = cache
        self.queue = queue
        self.logger = logger
        self.trimMemory = trimMemory
        self.durable = durable
    }

    /// Queues `record` (of the instance's `generation`) for the next batch.
    func store(_ record: CacheRecord, generation: Int) {
        let queueFlush = pending.withLock { pending in
            pending.records[record.instance] = (record, generation)
            defer { pending.flushQueued = true }
            return !pending.flushQueued
        }
        guard queueFlush else { return }
        queue.async { self.writeBatch() }
    }

    /// Removes the instance's cache file after any write of it already taken by the I/O queue; a write not yet
    /// taken is dropped.
    func remove(_ name: String) {
        _ = pending.withLock { $0.records.removeValue(forKey: name) }
        let cache = self.cache
        queue.async { cache.remove(instance: name) }
    }

    /// Waits until every queued write is done.
    func flush() {
        queue.sync {}
    }

    private func writeBatch() {
        let batch = pending.withLock { pending in
            defer {
                pending.records = [:]
                pending.flushQueued = false
            }
            return Array(pending.records.values)
        }
        for failure in cache.store(batch: batch.map(\.record)) {
            logger.error("cache write failed", metadata: ["instance": "\(failure.instance)", "error": "\(failure.error)"])
        }
        durable(batch.map { Written(instance: $0.record.instance, generation: $0.generation, fingerprint: $0.record.token.fingerprint) })
        // A large batch freed its records and the fetches' buffers before it: hand those pages back.
        if batch.count >= Self.trimAfterBatch { trimMemory() }
    }
}
