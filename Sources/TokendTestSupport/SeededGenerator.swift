import TokendCore

/// The deterministic generator tests use (jitter and "random" moments can be replayed): the daemon's own.
public typealias SeededGenerator = SplitMix64
