/// A value kept in one heap box that copies share: a copy costs a pointer, a write copies the box only while another
/// copy holds it (copy on write), and two copies of one box compare equal by identity, without looking inside.
///
/// ``InstanceDefinition`` and ``ResolvedInstance`` keep their many fields in one, since each is held by the config
/// memo, the loaded config and the daemon's running state at once.
public struct SharedBox<Value: Sendable & Hashable>: Sendable, Hashable {
    /// Mutated only while uniquely referenced, so sharing it between threads is safe.
    @usableFromInline
    final class Storage: @unchecked Sendable {
        @usableFromInline var value: Value

        @usableFromInline
        init(_ value: Value) {
            self.value = value
        }
    }

    // Inlinable, like the accessors of the types that use it: a field read from another module is then a load,
    // not a key path applied at run time (a tenth of the daemon's start-up apply step).
    @usableFromInline var storage: Storage

    @inlinable
    public init(_ value: Value) {
        storage = Storage(value)
    }

    @inlinable
    public var value: Value {
        _read { yield storage.value }
        _modify {
            if !isKnownUniquelyReferenced(&storage) { storage = Storage(storage.value) }
            yield &storage.value
        }
    }

    public static func == (lhs: SharedBox, rhs: SharedBox) -> Bool {
        lhs.storage === rhs.storage || lhs.storage.value == rhs.storage.value
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(storage.value)
    }
}
