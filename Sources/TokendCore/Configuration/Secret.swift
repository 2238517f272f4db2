/// A value that must never reach a log line, an error message, argv or the cache.
///
/// `description` and `debugDescription` are `<redacted>`; the value is read only through ``revealed``.
public struct Secret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The secret's text, for the one place that puts it on the wire.
    public let revealed: String

    public init(_ value: String) {
        self.revealed = value
    }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
}
