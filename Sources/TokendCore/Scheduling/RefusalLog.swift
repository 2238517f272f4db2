import Foundation

/// Refused requests, logged per caller: the first refusal of a uid is logged at once, the ones that follow within
/// `window` seconds are counted and summed up in one line when the window ends.
///
/// A caller looping on a request it may not make costs the log two lines per window, and journald's rate limit is
/// left for real warnings.
public struct RefusalLog: Sendable {
    /// One log line.
    public struct Line: Sendable, Hashable {
        public var uid: UInt32
        /// The pid of the last refused request.
        public var pid: Int32
        /// How many requests the line stands for.
        public var count: Int
        /// What they asked for (instance names or paths), at most ``RefusalLog/maxTargets``, in the order first seen.
        public var targets: [String]
        /// More targets than those listed were refused.
        public var moreTargets: Bool
        /// True for the line of a window's first refusal, false for a window's summary.
        public var isFirst: Bool
    }

    /// Targets listed in one line.
    public static let maxTargets = 5
    /// Callers counted at once; refusals of further uids in the same window are summed up under the last one.
    public static let maxCallers = 4096

    private struct Tally {
        var opened: Date
        var count = 0
        var pid: Int32 = 0
        var targets: [String] = []
        var moreTargets = false
    }

    public let window: Double
    private var tallies: [UInt32: Tally] = [:]

    public init(window: Double = 10) {
        self.window = window
    }

    /// How many callers have a window open.
    public var openWindows: Int { tallies.count }

    /// A request of `uid` (process `pid`) for `target` was refused at `now`: the lines to log now (the first
    /// refusal of a new window, after the summary of the caller's last window if that ended unreported).
    public mutating func refused(uid: UInt32, pid: Int32, target: String, now: Date) -> [Line] {
        var lines: [Line] = []
        if var tally = tallies[uid] {
            if now.timeIntervalSince(tally.opened) < window, now >= tally.opened {
                tally.count += 1
                tally.pid = pid
                if !tally.targets.contains(target) {
                    if tally.targets.count < Self.maxTargets { tally.targets.append(target) } else { tally.moreTargets = true }
                }
                tallies[uid] = tally
                return []
            }
            if let summary = Self.summary(uid: uid, tally) { lines.append(summary) }
        } else if tallies.count >= Self.maxCallers {
            // So many callers at once: further ones are not logged until windows end (the memory stays bounded).
            return []
        }
        tallies[uid] = Tally(opened: now)
        lines.append(Line(uid: uid, pid: pid, count: 1, targets: [target], moreTargets: false, isFirst: true))
        return lines
    }

    /// The summaries of the windows that ended by `now` (callers in uid order), each for the refusals after the first;
    /// windows with none end silently.
    public mutating func due(now: Date) -> [Line] {
        var lines: [Line] = []
        for uid in tallies.keys.sorted() {
            guard let tally = tallies[uid], now.timeIntervalSince(tally.opened) >= window || now < tally.opened else { continue }
            tallies[uid] = nil
            if let summary = Self.summary(uid: uid, tally) { lines.append(summary) }
        }
        return lines
    }

    private static func summary(uid: UInt32, _ tally: Tally) -> Line? {
        guard tally.count > 0 else { return nil }
        return Line(uid: uid, pid: tally.pid, count: tally.count, targets: tally.targets, moreTargets: tally.moreTargets, isFirst: false)
    }

    /// Every summary still open (the daemon stops).
    public mutating func flush() -> [Line] {
        due(now: .distantFuture)
    }
}
