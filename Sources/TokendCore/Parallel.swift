import Dispatch

/// Pure work spread over the cores: config files parsed and requests rendered at start-up, cache files decoded.
public enum Parallel {
    /// `body(0..<count)` on every core (in chunks, each index once), results in index order.
    ///
    /// Few items run inline. `body` runs on several threads at once: it may only read what it shares.
    public static func map<T: Sendable>(_ count: Int, _ body: (Int) -> T) -> [T] {
        let chunk = 64
        guard count > chunk else { return (0..<count).map(body) }
        return withoutActuallyEscaping(body) { body in
            let results = UnsafeMutableBufferPointer<T?>.allocate(capacity: count)
            results.initialize(repeating: nil)
            defer { results.deinitialize().deallocate() }
            let store = UncheckedBox(results)
            let work = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: (count + chunk - 1) / chunk) { part in
                for index in part * chunk..<min(count, (part + 1) * chunk) {
                    store.value[index] = work.value(index)
                }
            }
            return results.map { result in
                guard let result else { preconditionFailure("Parallel.map: index left uncomputed") }
                return result
            }
        }
    }

    /// Shares a value with `concurrentPerform`'s workers, which write disjoint indices and are joined before return.
    private struct UncheckedBox<Value>: @unchecked Sendable {
        let value: Value
        init(_ value: Value) { self.value = value }
    }
}
