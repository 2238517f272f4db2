import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The daemon's time: the wall clock (token lifetimes), the boot clock (which counts suspend: a difference in the two
/// clocks' progress is a step of the wall clock), the monotonic clock (`MONOTONIC_USEC=`), and timers on a queue.
///
/// The real one is ``SystemDaemonClock``; tests use a manual twin they advance.
public protocol DaemonClock: Sendable {
    /// The wall-clock time.
    func now() -> Date
    /// Seconds since boot, suspend included (`CLOCK_BOOTTIME`).
    func bootSeconds() -> Double
    /// Microseconds of `CLOCK_MONOTONIC`.
    func monotonicMicroseconds() -> UInt64
    /// A timer that runs `handler` on `queue` once armed; it does nothing until ``DaemonTimer/schedule(after:repeating:leeway:)``.
    func makeTimer(on queue: DispatchQueue, _ handler: @escaping @Sendable () -> Void) -> any DaemonTimer
}

/// A timer made by a ``DaemonClock``.
public protocol DaemonTimer: AnyObject, Sendable {
    /// Arms (or re-arms) the timer: first after `seconds`, then every `interval` when one is given.
    func schedule(after seconds: Double, repeating interval: Double?, leeway: Double)
    /// Disarms the timer for good.
    func cancel()
}

extension DaemonTimer {
    public func schedule(after seconds: Double, repeating interval: Double? = nil) {
        schedule(after: seconds, repeating: interval, leeway: 0.01)
    }
}

extension DaemonClock {
    /// Runs `handler` on `queue` once, after `seconds`.
    @discardableResult
    public func after(_ seconds: Double, on queue: DispatchQueue, _ handler: @escaping @Sendable () -> Void) -> any DaemonTimer {
        let timer = makeTimer(on: queue, handler)
        timer.schedule(after: seconds)
        return timer
    }
}

/// The system's clocks and Dispatch timers.
public struct SystemDaemonClock: DaemonClock {
    public init() {}

    public func now() -> Date { Date() }

    public func bootSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_BOOTTIME, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    public func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }

    public func makeTimer(on queue: DispatchQueue, _ handler: @escaping @Sendable () -> Void) -> any DaemonTimer {
        DispatchDaemonTimer(queue: queue, handler: handler)
    }
}

/// A ``DaemonTimer`` over one `DispatchSourceTimer`.
final class DispatchDaemonTimer: DaemonTimer, @unchecked Sendable {
    private let source: any DispatchSourceTimer

    init(queue: DispatchQueue, handler: @escaping @Sendable () -> Void) {
        source = DispatchSource.makeTimerSource(queue: queue)
        source.setEventHandler(handler: handler)
        source.activate()
    }

    func schedule(after seconds: Double, repeating interval: Double?, leeway: Double) {
        let deadline = DispatchTime.now() + max(0, seconds)
        let leeway = DispatchTimeInterval.milliseconds(Int(leeway * 1000))
        if let interval {
            source.schedule(deadline: deadline, repeating: interval, leeway: leeway)
        } else {
            source.schedule(deadline: deadline, leeway: leeway)
        }
    }

    func cancel() {
        source.cancel()
    }
}
