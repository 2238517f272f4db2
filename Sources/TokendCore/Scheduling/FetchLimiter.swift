import DequeModule

/// How many token requests may be in flight, overall (`max_concurrent`) and to one endpoint host
/// (`per_endpoint_concurrent`); instances over the limits wait in a first-in, first-out queue per host.
///
/// An instance waits at most once; a waiting entry whose instance went away is skipped when its turn comes (the
/// caller's `isWanted` says so), so withdrawing is O(1).
public struct FetchLimiter: Sendable {
    public var maxConcurrent: Int
    public var perEndpointConcurrent: Int

    public private(set) var inFlight = 0
    private var inFlightByHost: [String: Int] = [:]
    private var waitingByHost: [String: Deque<String>] = [:]
    private var waiting: Set<String> = []
    /// The most requests in flight at once, overall and to one host (for tests and benchmarks).
    public private(set) var peakInFlight = 0
    public private(set) var peakInFlightPerHost = 0

    public init(maxConcurrent: Int, perEndpointConcurrent: Int) {
        self.maxConcurrent = maxConcurrent
        self.perEndpointConcurrent = perEndpointConcurrent
    }

    /// How many requests to `host` are in flight.
    public func inFlight(to host: String) -> Int { inFlightByHost[host, default: 0] }

    /// Whether `name` waits for a free place.
    public func isWaiting(_ name: String) -> Bool { waiting.contains(name) }

    /// Asks to fetch `name` from `host`.
    ///
    /// Returns true when it may start now (it then counts as in flight); false when it waits (it is queued once,
    /// however often it asks).
    public mutating func admit(_ name: String, host: String) -> Bool {
        guard hasRoom(for: host) else {
            if waiting.insert(name).inserted {
                waitingByHost[host, default: []].append(name)
            }
            return false
        }
        begin(host)
        return true
    }

    /// A request to `host` finished.
    ///
    /// Returns the waiting instances that start now, oldest first: the freed host's queue first, then other hosts while
    /// the overall limit allows. They count as in flight. O(1) per started fetch.
    public mutating func finished(host: String, isWanted: (String) -> Bool) -> [(name: String, host: String)] {
        inFlight -= 1
        inFlightByHost[host, default: 1] -= 1
        if inFlightByHost[host] == 0 { inFlightByHost.removeValue(forKey: host) }
        var started = drain(host, isWanted: isWanted)
        for other in waitingByHost.keys.sorted() where other != host {
            guard inFlight < maxConcurrent else { break }
            started += drain(other, isWanted: isWanted)
        }
        return started
    }

    /// `name` no longer wants a fetch (removed or replaced); its queue entry is skipped when its turn comes.
    public mutating func withdraw(_ name: String) {
        waiting.remove(name)
    }

    private func hasRoom(for host: String) -> Bool {
        inFlight < maxConcurrent && inFlightByHost[host, default: 0] < perEndpointConcurrent
    }

    private mutating func begin(_ host: String) {
        inFlight += 1
        inFlightByHost[host, default: 0] += 1
        peakInFlight = max(peakInFlight, inFlight)
        peakInFlightPerHost = max(peakInFlightPerHost, inFlightByHost[host, default: 0])
    }

    private mutating func drain(_ host: String, isWanted: (String) -> Bool) -> [(name: String, host: String)] {
        var started: [(name: String, host: String)] = []
        while hasRoom(for: host), let name = waitingByHost[host]?.popFirst() {
            if waiting.remove(name) != nil, isWanted(name) {
                begin(host)
                started.append((name, host))
            }
        }
        if waitingByHost[host]?.isEmpty == true { waitingByHost.removeValue(forKey: host) }
        return started
    }
}
