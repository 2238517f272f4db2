import Dispatch

/// A task executor on a serial Dispatch queue.
///
/// The fleet's store calls run here rather than on Swift's shared cooperative pool, which has one thread per core:
/// a pool kept busy (or blocked) elsewhere then never delays the daemon's database work, and the queue can be
/// waited on.
final class DispatchTaskExecutor: TaskExecutor, @unchecked Sendable {
    let queue: DispatchQueue

    init(label: String) {
        queue = DispatchQueue(label: label)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { unowned.runSynchronously(on: executor) }
    }
}
