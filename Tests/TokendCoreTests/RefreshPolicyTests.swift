import Foundation
import Testing
import TokendTestSupport

@testable import TokendCore

@Suite struct RefreshPolicyTests {
    static let defaults = RefreshPolicy(RefreshSettings())

    /// (lifetime, earliest, latest) offsets from `obtainedAt` with the default settings; see RefreshPolicy's table.
    @Test(arguments: [
        (3600.0, 2610.0, 2790.0),
        (300.0, 217.5, 232.5),
        (120.0, 54.0, 66.0),
        (40.0, 30.0, 30.0),
    ])
    func refreshPointStaysWithinItsJitterBounds(_ lifetime: Double, _ earliest: Double, _ latest: Double) {
        let issued = token(lifetime: lifetime)
        let window = Self.defaults.refreshWindow(for: issued)
        #expect(abs(window.lowerBound.timeIntervalSince(epoch) - earliest) < 0.001)
        #expect(abs(window.upperBound.timeIntervalSince(epoch) - latest) < 0.001)
        var seeded = SeededGenerator(seed: 42)
        let offsets = (0..<2000).map { _ in Self.defaults.refreshTime(for: issued, using: &seeded).timeIntervalSince(epoch) }
        #expect(offsets.allSatisfy { $0 >= earliest - 0.001 && $0 <= latest + 0.001 })
        // The draws cover the window: both ends are approached within 2 % of its width.
        let slack = max(0.001, (latest - earliest) * 0.02)
        #expect(offsets.min()! <= earliest + slack)
        #expect(offsets.max()! >= latest - slack)
    }

    @Test func jitterSpreadsInstancesThatWereIssuedTogether() {
        var seeded = SeededGenerator(seed: 7)
        let issued = token(lifetime: 3600)
        let points = Set((0..<100).map { _ in Int(Self.defaults.refreshTime(for: issued, using: &seeded).timeIntervalSince(epoch)) })
        #expect(points.count > 50)
    }

    @Test func minIntervalIsAFloor() {
        var settings = RefreshSettings()
        settings.minInterval = 30
        var generator = SeededGenerator(seed: 9)
        let due = RefreshPolicy(settings).refreshTime(for: token(lifetime: 1), using: &generator)
        #expect(due == epoch.addingTimeInterval(30))
    }

    @Test func shortTokensWithSmallLeadRefreshAtTheRatio() {
        var settings = RefreshSettings()
        settings.minLead = 0
        settings.minInterval = 1
        settings.jitter = 0
        var generator = SeededGenerator(seed: 1)
        let due = RefreshPolicy(settings).refreshTime(for: token(lifetime: 3), using: &generator)
        #expect(due == epoch.addingTimeInterval(2.25))
    }

    @Test func transientBackoffDoublesUpToTheCap() {
        let failure = FetchFailure(kind: .transient, code: "network", message: "refused")
        let windows = (1...12).map { Self.defaults.retryWindow(for: .transient, consecutiveFailures: $0) }
        #expect(windows.map(\.upperBound) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300])
        #expect(windows.allSatisfy { $0.lowerBound == 1 })
        var seeded = SeededGenerator(seed: 4)
        for attempt in 1...12 {
            let delay = Self.defaults.retryDelay(after: failure, consecutiveFailures: attempt, using: &seeded)
            #expect(windows[attempt - 1].contains(delay))
        }
    }

    @Test func retryAfterWinsWhenLonger() {
        var generator = SeededGenerator(seed: 3)
        let failure = FetchFailure(kind: .transient, code: "http_429", message: "", retryAfter: 42)
        #expect(Self.defaults.retryDelay(after: failure, consecutiveFailures: 1, using: &generator) == 42)
    }

    @Test func permanentFailuresWaitPermanentRetry() {
        var generator = SeededGenerator(seed: 3)
        let failure = FetchFailure(kind: .permanent, code: "invalid_client", message: "")
        #expect(Self.defaults.retryDelay(after: failure, consecutiveFailures: 1, using: &generator) == 600)
        #expect(Self.defaults.retryDelay(after: failure, consecutiveFailures: 9, using: &generator) == 600)
    }

    @Test func servingStopsAtTheSafetyMargin() {
        let long = token(lifetime: 3600)
        #expect(long.serveUntil == epoch.addingTimeInterval(3595))
        #expect(long.isServable(at: epoch.addingTimeInterval(3594.999)))
        #expect(!long.isServable(at: epoch.addingTimeInterval(3595)))
        let short = token(lifetime: 3)
        #expect(short.serveUntil == epoch.addingTimeInterval(2.7))
        #expect(!short.isServable(at: epoch.addingTimeInterval(2.7)))
    }
}
