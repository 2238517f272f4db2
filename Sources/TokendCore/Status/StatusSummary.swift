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

    /// The line for `entries`, the number of config errors of the last load (with the first broken file), why the
    /// last reload was rejected, and how the host stands with its fleet (SPEC §14; nil without `[fleet]`).
    public static func line(
        _ entries: [Entry],
        configErrors: Int = 0,
        firstBrokenFile: String? = nil,
        rejectedReload: String? = nil,
        fleet: String? = nil
    ) -> String {
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
            if let firstBrokenFile { line += " (\(firstBrokenFile))" }
        }
        if let rejectedReload { line += "; reload rejected: \(rejectedReload)" }
        if let fleet { line += "; fleet: \(fleet)" }
        return line
    }
}
