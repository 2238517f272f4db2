/// The one-line `STATUS=` summary: `12 instances: 11 valid, 1 failing (acme-prod: invalid_client)`.
public enum StatusSummary {
    public struct Entry: Sendable, Hashable {
        public var name: String
        public var state: InstanceStateMachine.State
        public var errorCode: String?

        public init(name: String, state: InstanceStateMachine.State, errorCode: String?) {
            self.name = name
            self.state = state
            self.errorCode = errorCode
        }
    }

    public static func line(_ entries: [Entry], configErrors: Int = 0) -> String {
        let order: [InstanceStateMachine.State] = [.valid, .degraded, .pending, .expired, .failing]
        var parts: [String] = []
        for state in order {
            let count = entries.count { $0.state == state }
            if count > 0 { parts.append("\(count) \(state.rawValue)") }
        }
        var line = "\(entries.count) instance\(entries.count == 1 ? "" : "s")"
        if !parts.isEmpty { line += ": " + parts.joined(separator: ", ") }
        let troubled = entries.filter { $0.state == .failing || $0.state == .degraded }.sorted { $0.name < $1.name }
        if let first = troubled.first {
            line += " (\(first.name): \(first.errorCode ?? first.state.rawValue))"
        }
        if configErrors > 0 {
            line += "; \(configErrors) config error\(configErrors == 1 ? "" : "s")"
        }
        return line
    }
}
