/// Variable names to values, for the few variables each instance sets: one array of entries sorted by name.
///
/// A `Dictionary` of a few entries is mostly empty buckets and header, and every instance keeps two of these (its
/// variable sources and its values), so one sorted array takes about half the memory. Lookups are a binary search
/// over a handful of names. Equality and hashing ignore the order in which
/// entries were set, like a dictionary's.
public struct VariableMap<Value: Sendable & Hashable>: Sendable, Hashable, Sequence, ExpressibleByDictionaryLiteral {
    public typealias Element = (key: String, value: Value)

    @usableFromInline struct Entry: Sendable, Hashable {
        @usableFromInline var key: String
        @usableFromInline var value: Value

        @usableFromInline init(key: String, value: Value) {
            self.key = key
            self.value = value
        }
    }

    @usableFromInline var entries: [Entry] = []

    public init() {}

    public init(dictionaryLiteral elements: (String, Value)...) {
        for (key, value) in elements { self[key] = value }
    }

    public init(_ dictionary: [String: Value]) {
        entries = dictionary.map { Entry(key: $0.key, value: $0.value) }.sorted { $0.key < $1.key }
    }

    /// Where `key` is, or where it would go.
    @inlinable
    func position(of key: String) -> (index: Int, found: Bool) {
        var low = 0
        var high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].key < key { low = middle + 1 } else { high = middle }
        }
        return (low, low < entries.count && entries[low].key == key)
    }

    @inlinable
    public subscript(key: String) -> Value? {
        get {
            let (index, found) = position(of: key)
            return found ? entries[index].value : nil
        }
        set {
            let (index, found) = position(of: key)
            switch (found, newValue) {
            case (true, let value?): entries[index].value = value
            case (true, nil): entries.remove(at: index)
            case (false, let value?): entries.insert(Entry(key: key, value: value), at: index)
            case (false, nil): break
            }
        }
    }

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }
    /// The names, sorted.
    public var keys: [String] { entries.map(\.key) }

    /// The same entries as a dictionary.
    public var dictionary: [String: Value] {
        Dictionary(uniqueKeysWithValues: entries.map { ($0.key, $0.value) })
    }

    /// In name order.
    public func makeIterator() -> AnyIterator<Element> {
        var iterator = entries.makeIterator()
        return AnyIterator { iterator.next().map { (key: $0.key, value: $0.value) } }
    }
}

extension VariableMap: CustomStringConvertible {
    public var description: String {
        "[" + entries.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "]"
    }
}
