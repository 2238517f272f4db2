import Dispatch
import Foundation
import TokendIO

/// A ``DaemonClock`` that moves only when a test says so.
///
/// ``advance(by:wait:)`` moves the wall and boot clocks together and runs every timer that comes due on the way, in
/// time order, each on its queue; ``stepWall(by:)`` moves only the wall clock, like NTP or an operator setting the
/// time.
public final class ManualClock: DaemonClock, @unchecked Sendable {
    private let lock = NSLock()
    private var wall: Date
    private var boot: Double = 1_000
    private var timers: [ManualTimer] = []
    private var made = 0
    private var afterEachTimer: @Sendable () -> Void = {}

    public init(now: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
        wall = now
    }

    public func now() -> Date { lock.withLock { wall } }

    public func bootSeconds() -> Double { lock.withLock { boot } }

    public func monotonicMicroseconds() -> UInt64 { lock.withLock { UInt64(boot * 1_000_000) } }

    public func makeTimer(on queue: DispatchQueue, _ handler: @escaping @Sendable () -> Void) -> any DaemonTimer {
        lock.withLock {
            made += 1
            let timer = ManualTimer(clock: self, order: made, queue: queue, handler: handler)
            timers.append(timer)
            return timer
        }
    }

    /// Runs after each timer's handler when ``advance(by:wait:)`` waits, before time moves on: a test waits there
    /// for what the handler queued elsewhere (a fetch's result, a cache write).
    public func afterEachTimer(_ body: @escaping @Sendable () -> Void) {
        lock.withLock { afterEachTimer = body }
    }

    /// Timers armed and not cancelled.
    public var armedTimers: Int { lock.withLock { timers.count { $0.due != nil } } }

    /// When the earliest armed timer fires, in seconds from now; nil when none is armed.
    public var nextTimer: Double? {
        lock.withLock { timers.compactMap(\.due).min().map { $0 - boot } }
    }

    /// Moves time forward by `seconds`, running each timer that comes due on its queue, in order of due time.
    ///
    /// With `wait` each handler has finished (`queue.sync`) before time moves on; without it the handlers are only
    /// queued (a test that keeps the queue blocked sees them run later).
    public func advance(by seconds: Double, wait: Bool = true) {
        let target = lock.withLock { boot + seconds }
        while let (timer, handler) = nextDue(before: target) {
            if wait {
                timer.queue.sync(execute: handler)
                lock.withLock { afterEachTimer }()
            } else {
                timer.queue.async(execute: handler)
            }
        }
        lock.withLock {
            wall.addTimeInterval(target - boot)
            boot = target
        }
    }

    /// Steps the wall clock alone by `seconds` (the boot clock and the timers do not move).
    public func stepWall(by seconds: Double) {
        lock.withLock { wall.addTimeInterval(seconds) }
    }

    /// Takes the earliest timer due by `target`, moves the clocks to its time and re-arms or disarms it.
    private func nextDue(before target: Double) -> (ManualTimer, @Sendable () -> Void)? {
        lock.withLock {
            let due = timers.filter { $0.due.map { $0 <= target } ?? false }
            guard let timer = due.min(by: { ($0.due ?? 0, $0.order) < ($1.due ?? 0, $1.order) }), let time = timer.due else {
                return nil
            }
            wall.addTimeInterval(max(0, time - boot))
            boot = max(boot, time)
            timer.due = timer.interval.map { time + max($0, 0.000_001) }
            return (timer, timer.handler)
        }
    }

    fileprivate func schedule(_ timer: ManualTimer, after seconds: Double, repeating interval: Double?) {
        lock.withLock {
            timer.due = boot + max(0, seconds)
            timer.interval = interval
        }
    }

    fileprivate func cancel(_ timer: ManualTimer) {
        lock.withLock {
            timer.due = nil
            timers.removeAll { $0 === timer }
        }
    }
}

private final class ManualTimer: DaemonTimer, @unchecked Sendable {
    unowned let clock: ManualClock
    let order: Int
    let queue: DispatchQueue
    let handler: @Sendable () -> Void
    /// Guarded by the clock's lock.
    var due: Double?
    var interval: Double?

    init(clock: ManualClock, order: Int, queue: DispatchQueue, handler: @escaping @Sendable () -> Void) {
        self.clock = clock
        self.order = order
        self.queue = queue
        self.handler = handler
    }

    func schedule(after seconds: Double, repeating interval: Double?, leeway: Double) {
        clock.schedule(self, after: seconds, repeating: interval)
    }

    func cancel() {
        clock.cancel(self)
    }
}
