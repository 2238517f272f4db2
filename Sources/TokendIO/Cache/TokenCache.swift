import TokendCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What loading one instance's cache file found.
public enum CacheLoadOutcome: Sendable, Hashable {
    case missing
    case loaded(CacheRecord)
    /// Unreadable, corrupt, foreign or a symlink: moved aside (`<name>.json.corrupt`); the reason is for the log.
    case movedAside(reason: String)
}

/// Where tokens survive a restart.
///
/// The real one is ``FileTokenCache``; tests use an in-memory twin.
public protocol TokenCache: Sendable {
    /// Makes the cache usable (creates its directory, removes what a crash left behind).
    func prepare() throws(CacheError)
    func load(instance: String) -> CacheLoadOutcome
    func store(_ record: CacheRecord) throws(CacheError)
    /// Stores several records durably with one flush; returns the ones that failed.
    func store(batch records: [CacheRecord]) -> [(instance: String, error: CacheError)]
    func remove(instance: String)
}

extension TokenCache {
    public func store(batch records: [CacheRecord]) -> [(instance: String, error: CacheError)] {
        var failures: [(instance: String, error: CacheError)] = []
        for record in records {
            do {
                try store(record)
            } catch {
                failures.append((record.instance, error))
            }
        }
        return failures
    }
}

/// A cache or sink operation that failed, with the errno that caused it, or the reason tokend refused it.
public struct CacheError: Error, Sendable, Hashable, CustomStringConvertible {
    public var operation: String
    public var path: String
    public var errno: Int32
    /// Why tokend refused, when it was tokend and not the system (a directory others may write, say).
    public var reason: String?

    public init(operation: String, path: String, errno: Int32, reason: String? = nil) {
        self.operation = operation
        self.path = path
        self.errno = errno
        self.reason = reason
    }

    public var description: String {
        "\(operation) \(path): \(reason ?? String(cString: strerror(errno)))"
    }
}
