/// One problem found in a config file, rendered as `path:line: message`.
public struct ConfigDiagnostic: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Severity: String, Sendable, Hashable {
        case error
        case warning
    }

    public var file: String
    public var line: Int?
    public var key: String?
    public var message: String
    public var severity: Severity

    public init(file: String, line: Int?, key: String? = nil, message: String, severity: Severity = .error) {
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        self.severity = severity
    }

    public var description: String {
        let location = line.map { "\(file):\($0)" } ?? file
        let prefix = severity == .warning ? "warning: " : ""
        if let key {
            return "\(location): \(prefix)\(key): \(message)"
        }
        return "\(location): \(prefix)\(message)"
    }
}
