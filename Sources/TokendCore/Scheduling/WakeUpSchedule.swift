import Foundation
import HeapModule

/// The daemon's wake-ups: one heap of (time, instance, generation, purpose) behind one timer.
///
/// Entries are never removed early. An entry whose instance was rescheduled, replaced or removed is recognised as
/// stale when it reaches the top (the caller's `isLive` says so) and dropped, so every reschedule is one O(log n)
/// insertion and the timer is re-armed only when a new entry is earlier than the time it is armed for.
public struct WakeUpSchedule: Sendable {
    /// One wake-up.
    public struct Entry: Comparable, Sendable {
        /// Why the instance wakes.
        public enum Purpose: Comparable, Sendable {
            /// The instance's next attempt is due.
            case attempt
            /// The served token stops being servable: the state and `STATUS=` change.
            case expiry
        }

        public var due: Date
        public var name: String
        public var generation: Int
        public var purpose: Purpose

        public init(due: Date, name: String, generation: Int, purpose: Purpose) {
            self.due = due
            self.name = name
            self.generation = generation
            self.purpose = purpose
        }

        public static func < (lhs: Entry, rhs: Entry) -> Bool {
            (lhs.due, lhs.name) < (rhs.due, rhs.name)
        }
    }

    /// Entries due within this many seconds of `now` are taken together with the due ones (timer leeway).
    public static let tolerance = 0.005

    private var heap = Heap<Entry>()

    /// The time the timer is armed for; nil when it is not armed.
    public private(set) var armedFor: Date?

    public init() {}

    /// How many entries the heap holds, stale ones included.
    public var count: Int { heap.count }

    /// Adds a wake-up.
    ///
    /// Returns whether the timer must be re-armed: the entry is earlier than the armed time.
    public mutating func add(_ entry: Entry) -> Bool {
        heap.insert(entry)
        return armedFor.map { entry.due < $0 } ?? true
    }

    /// The timer fired: it is no longer armed until ``arm(isLive:)``.
    public mutating func fired() {
        armedFor = nil
    }

    /// Removes and returns the earliest live entry due at `now`, dropping stale entries on the way; nil when none is
    /// due.
    ///
    /// Entries added while the caller handles one are considered by the next call.
    public mutating func takeDue(at now: Date, isLive: (Entry) -> Bool) -> Entry? {
        while let first = heap.min, first.due <= now.addingTimeInterval(Self.tolerance) {
            heap.removeMin()
            if isLive(first) { return first }
        }
        return nil
    }

    /// The time to arm the timer for: the earliest live entry (stale ones on top are dropped); nil when nothing is
    /// scheduled.
    ///
    /// The result is remembered as the armed time.
    public mutating func arm(isLive: (Entry) -> Bool) -> Date? {
        while let first = heap.min, !isLive(first) {
            heap.removeMin()
        }
        armedFor = heap.min?.due
        return armedFor
    }
}
