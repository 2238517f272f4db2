import Foundation
import Testing

@testable import TokendCore

/// The scheduler's pure parts, with values: the wake-up schedule, the fetch limiter, the reload plan, readiness and
/// the systemd messages.
@Suite struct SchedulingTests {
    typealias Entry = WakeUpSchedule.Entry

    @Test func theScheduleArmsForTheEarliestLiveEntryAndSkipsStaleOnes() {
        var schedule = WakeUpSchedule()
        let live: Set<String> = ["b", "c"]
        let isLive: (Entry) -> Bool = { live.contains($0.name) }
        let first = schedule.add(Entry(due: epoch + 30, name: "c", generation: 1, purpose: .attempt))
        #expect(first)
        let armed = schedule.arm(isLive: isLive)
        #expect(armed == epoch + 30)
        // Later than the armed time: no re-arm. Earlier: re-arm.
        let later = schedule.add(Entry(due: epoch + 40, name: "b", generation: 1, purpose: .expiry))
        let earlier = schedule.add(Entry(due: epoch + 10, name: "a", generation: 1, purpose: .attempt))
        #expect(!later && earlier)
        // "a" is stale (removed meanwhile): the timer is armed for the next live entry.
        let rearmed = schedule.arm(isLive: isLive)
        #expect(rearmed == epoch + 30)
        schedule.fired()
        let early = schedule.takeDue(at: epoch + 29, isLive: isLive)
        let withinTolerance = schedule.takeDue(at: epoch + 29.999, isLive: isLive)
        let nothingMore = schedule.takeDue(at: epoch + 30, isLive: isLive)
        #expect(early == nil)
        #expect(withinTolerance?.name == "c")
        #expect(nothingMore == nil)
        let next = schedule.arm(isLive: isLive)
        #expect(next == epoch + 40)
        #expect(schedule.count == 1)
    }

    @Test func theLimiterHoldsFetchesBackPerHostAndOverallInOrder() {
        var limiter = FetchLimiter(maxConcurrent: 3, perEndpointConcurrent: 2)
        let admitted = [
            limiter.admit("a1", host: "a"), limiter.admit("a2", host: "a"), limiter.admit("a3", host: "a"),
            limiter.admit("a3", host: "a"), limiter.admit("b1", host: "b"), limiter.admit("b2", host: "b"),
            limiter.admit("a4", host: "a"),
        ]
        // a3 waits (once, however often it asks); b2 waits for the overall limit.
        #expect(admitted == [true, true, false, false, true, false, false])
        limiter.withdraw("a3")
        // a's turn: a3 withdrew, a4 starts; the overall limit is reached again, b2 waits.
        let afterA = limiter.finished(host: "a") { _ in true }.map(\.name)
        #expect(afterA == ["a4"])
        #expect(limiter.inFlight == 3)
        let afterB = limiter.finished(host: "b") { _ in true }.map(\.name)
        let afterA2 = limiter.finished(host: "a") { _ in true }.map(\.name)
        #expect(afterB == ["b2"])
        #expect(afterA2.isEmpty)
        #expect(limiter.inFlight == 2)
        #expect(limiter.peakInFlight == 3)
        #expect(limiter.peakInFlightPerHost == 2)
    }

    @Test func aFreedPlaceGoesToOtherHostsWhenItsOwnQueueIsEmpty() {
        var limiter = FetchLimiter(maxConcurrent: 2, perEndpointConcurrent: 2)
        let admitted = [
            limiter.admit("a1", host: "a"), limiter.admit("a2", host: "a"), limiter.admit("b1", host: "b"),
            limiter.admit("c1", host: "c"),
        ]
        #expect(admitted == [true, true, false, false])
        let started = limiter.finished(host: "a") { $0 != "b1" }.map(\.name)  // b1 is no longer wanted
        #expect(started == ["c1"])
        #expect(!limiter.isWaiting("b1"))
    }

    @Test func theReloadPlanSortsEveryName() {
        let plan = ReloadPlan(
            running: ["keep": "f1", "change": "f2", "gone": "f3", "broken": "f4"],
            loaded: ["keep": "f1", "change": "f2b", "new": "f5"],
            failed: ["broken", "never-ran"]
        )
        #expect(plan.unchanged == ["keep"])
        #expect(plan.changed == ["change"])
        #expect(plan.added == ["new"])
        #expect(plan.removed == ["gone"])
        #expect(plan.kept == ["broken"])
        #expect(plan.starting == ["change", "new"])
    }

    @Test func readinessComesOnceWhenEverythingSettledOrTheTimeoutRanOut() {
        var readiness = Readiness()
        readiness.started("a", settled: false)
        readiness.started("b", settled: true)
        let early = readiness.becomesReady(startupTimedOut: false)
        readiness.settled("a")
        let settled = readiness.becomesReady(startupTimedOut: false)
        let again = readiness.becomesReady(startupTimedOut: true)
        #expect(!early && settled && !again)
        var timedOut = Readiness()
        timedOut.started("a", settled: false)
        let forced = timedOut.becomesReady(startupTimedOut: true)
        #expect(forced)
    }

    @Test func systemdMessagesRenderInOnePlace() {
        #expect(SystemdMessage.render([.ready, .status("1 instance: 1 valid")]) == "READY=1\nSTATUS=1 instance: 1 valid")
        #expect(SystemdMessage.render([.reloading(monotonicMicroseconds: 12)]) == "RELOADING=1\nMONOTONIC_USEC=12")
        #expect(SystemdMessage.render([.status("two\nlines")]) == "STATUS=two lines")
        #expect(
            SystemdMessage.render([.stopping, .watchdog, .extendTimeout(microseconds: 5), .errno(22)])
                == "STOPPING=1\nWATCHDOG=1\nEXTEND_TIMEOUT_USEC=5\nERRNO=22"
        )
    }

    @Test func waitersAreTakenByInstanceByIdOrAll() {
        var book = WaiterBook<Int>()
        let peer = PeerCredentials(uid: 1000, gid: 1000, pid: 7)
        let first = book.add("a", minValid: 0, format: .json, peer: peer, reply: 1)
        _ = book.add("a", minValid: 60, format: .json, peer: peer, reply: 2)
        _ = book.add("b", minValid: 0, format: .json, peer: peer, reply: 3)
        #expect(book.count == 3)
        let byID = book.take(id: first, of: "a")?.reply
        let again = book.take(id: first, of: "a")
        let startupWaits = book.take("a") { $0.minValid == 0 }
        let rest = book.takeAll().map(\.reply)
        #expect(byID == 1)
        #expect(again == nil)
        #expect(startupWaits.isEmpty)
        #expect(rest == [2, 3])
        #expect(book.count == 0)
        #expect(book.instances.isEmpty)
    }
}

/// Issue 18, finding 7: refused requests are logged per caller, the first at once and the rest summed up.
@Suite struct RefusalLogTests {
    @Test func aLoopingCallerCostsTwoLinesPerWindow() {
        var log = RefusalLog(window: 10)
        var lines: [RefusalLog.Line] = []
        // 51,000 refusals of one uid over six seconds, and one of another uid.
        for i in 0..<51_000 {
            let now = epoch + Double(i) * 6 / 51_000
            lines += log.refused(uid: 65534, pid: 40 + Int32(i % 3), target: i % 2 == 0 ? "private" : "other", now: now)
        }
        lines += log.refused(uid: 1000, pid: 7, target: "private", now: epoch + 1)
        #expect(lines.count == 2)
        #expect(lines.first == .init(uid: 65534, pid: 40, count: 1, targets: ["private"], moreTargets: false, isFirst: true))
        #expect(log.due(now: epoch + 9).isEmpty)
        let summaries = log.due(now: epoch + 11)
        // The second caller's window had nothing after its first line: it ends silently.
        #expect(
            summaries == [.init(uid: 65534, pid: 42, count: 50_999, targets: ["other", "private"], moreTargets: false, isFirst: false)]
        )
        #expect(log.openWindows == 0)
    }

    @Test func aWindowThatEndedUnreportedIsSummedUpBeforeTheNextFirstLine() {
        var log = RefusalLog(window: 10)
        _ = log.refused(uid: 5, pid: 1, target: "a", now: epoch)
        for i in 0..<7 { _ = log.refused(uid: 5, pid: 2, target: "t\(i)", now: epoch + 1) }
        let lines = log.refused(uid: 5, pid: 3, target: "a", now: epoch + 12)
        #expect(lines.map(\.isFirst) == [false, true])
        #expect(lines.first?.count == 7 && lines.first?.targets.count == RefusalLog.maxTargets && lines.first?.moreTargets == true)
        #expect(log.flush().isEmpty)
    }
}
