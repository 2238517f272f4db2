import Foundation

/// Requests waiting for an instance's refresh (`min_valid`, or a first token during start-up), each kept with the
/// caller's credentials, so that a later decision (a reload that changes `[access]`) can look at who waits.
///
/// `Reply` is how the executor answers one; the book only keeps it.
public struct WaiterBook<Reply: Sendable>: Sendable {
    public struct Waiter: Sendable {
        public var id: Int
        public var name: String
        /// Seconds the served token must still be valid for; 0 for a start-up wait.
        public var minValid: Double
        public var format: TokenFormat
        public var peer: PeerCredentials?
        public var reply: Reply
    }

    private var byInstance: [String: [Waiter]] = [:]
    private var lastID = 0

    public init() {}

    /// How many requests wait, over all instances.
    public var count: Int { byInstance.values.reduce(0) { $0 + $1.count } }

    /// The instances somebody waits for, in name order.
    public var instances: [String] { byInstance.keys.sorted() }

    /// Adds a waiter and returns its id.
    public mutating func add(_ name: String, minValid: Double, format: TokenFormat, peer: PeerCredentials?, reply: Reply) -> Int {
        lastID += 1
        let waiter = Waiter(id: lastID, name: name, minValid: minValid, format: format, peer: peer, reply: reply)
        byInstance[name, default: []].append(waiter)
        return lastID
    }

    /// Removes and returns every waiter of `name` that `predicate` selects (all by default), oldest first, asking it
    /// once each.
    public mutating func take(_ name: String, where predicate: (Waiter) -> Bool = { _ in true }) -> [Waiter] {
        guard let all = byInstance[name] else { return [] }
        var taken: [Waiter] = []
        var left: [Waiter] = []
        for entry in all {
            if predicate(entry) { taken.append(entry) } else { left.append(entry) }
        }
        byInstance[name] = left.isEmpty ? nil : left
        return taken
    }

    /// Removes and returns the waiter with `id`, if it still waits.
    public mutating func take(id: Int, of name: String) -> Waiter? {
        take(name) { $0.id == id }.first
    }

    /// Removes and returns every waiter, in name order.
    public mutating func takeAll() -> [Waiter] {
        defer { byInstance = [:] }
        return instances.flatMap { byInstance[$0] ?? [] }
    }
}

/// Open `watch` streams by instance, each kept with the caller's credentials.
public struct WatcherBook<Stream: Sendable>: Sendable {
    public struct Watcher: Sendable {
        public var peer: PeerCredentials?
        public var stream: Stream
    }

    private var byInstance: [String: [Watcher]] = [:]

    public init() {}

    public var count: Int { byInstance.values.reduce(0) { $0 + $1.count } }

    /// The instances somebody watches, in name order.
    public var instances: [String] { byInstance.keys.sorted() }

    public mutating func add(_ name: String, peer: PeerCredentials?, stream: Stream) {
        byInstance[name, default: []].append(Watcher(peer: peer, stream: stream))
    }

    /// The streams of `name` that are still open (`isOpen`); closed ones are forgotten.
    public mutating func open(_ name: String, isOpen: (Stream) -> Bool) -> [Stream] {
        guard let all = byInstance[name] else { return [] }
        let left = all.filter { isOpen($0.stream) }
        byInstance[name] = left.isEmpty ? nil : left
        return left.map(\.stream)
    }

    /// Removes and returns the watchers of `name` that `predicate` selects (all by default), asking it once each.
    public mutating func take(_ name: String, where predicate: (Watcher) -> Bool = { _ in true }) -> [Watcher] {
        guard let all = byInstance[name] else { return [] }
        var taken: [Watcher] = []
        var left: [Watcher] = []
        for entry in all {
            if predicate(entry) { taken.append(entry) } else { left.append(entry) }
        }
        byInstance[name] = left.isEmpty ? nil : left
        return taken
    }

    public mutating func takeAll() -> [Watcher] {
        defer { byInstance = [:] }
        return byInstance.keys.sorted().flatMap { byInstance[$0] ?? [] }
    }
}
