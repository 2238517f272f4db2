import Foundation

/// The daemon's source of wall-clock time; tests of the wiring may pass their own.
public protocol WallClock: Sendable {
    func now() -> Date
}

public struct SystemClock: WallClock {
    public init() {}

    public func now() -> Date { Date() }
}
