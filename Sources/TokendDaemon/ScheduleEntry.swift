import Foundation

/// One wake-up in the scheduler's heap. Entries are never removed early: an entry whose instance was
/// rescheduled, replaced or removed is recognised as stale when it comes up (its generation or time no longer
/// matches) and skipped, so every reschedule is one O(log n) push.
struct ScheduleEntry: Comparable {
    enum Purpose: Comparable {
        /// The instance's next attempt is due.
        case attempt
        /// The served token stops being servable: the state and `STATUS=` change.
        case expiry
    }

    var due: Date
    var name: String
    var generation: Int
    var purpose: Purpose

    static func < (lhs: ScheduleEntry, rhs: ScheduleEntry) -> Bool {
        (lhs.due, lhs.name) < (rhs.due, rhs.name)
    }
}
