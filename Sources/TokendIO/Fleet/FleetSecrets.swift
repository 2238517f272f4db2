import Foundation
import TokendCore

/// What `[fleet]` names outside `tokend.toml`, read at start: the key, the database password and this host's id.
public struct FleetSecrets: Sendable {
    public var codec: FleetCodec
    public var password: String?
    public var hostID: String

    /// Why they could not be read (names the file, never its contents).
    public struct Problem: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// Reads them; `machineID` is where the default host id comes from.
    public static func read(
        _ settings: FleetSettings,
        credentialsDirectory: String?,
        machineID: String = "/etc/machine-id"
    ) -> Result<FleetSecrets, Problem> {
        let keyText: String
        switch ConfigDirectory.readSecret(settings.key, credentialsDirectory: credentialsDirectory) {
        case .success(let secret): keyText = secret.text
        case .failure(let error): return .failure(Problem(description: "fleet key: \(error.message)"))
        }
        let codec: FleetCodec
        switch FleetCodec.parse(key: keyText) {
        case .success(let parsed): codec = parsed
        case .failure(let error): return .failure(Problem(description: "\(error)"))
        }
        var password: String?
        if let source = settings.password {
            switch ConfigDirectory.readSecret(source, credentialsDirectory: credentialsDirectory) {
            case .success(let secret): password = secret.text.trimmingCharacters(in: .newlines)
            case .failure(let error): return .failure(Problem(description: "fleet database password: \(error.message)"))
            }
        }
        var hostID = settings.hostID
        if hostID == nil, case .success(let text) = ConfigDirectory.readText(machineID) {
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if !trimmed.isEmpty { hostID = trimmed }
        }
        guard let hostID else {
            return .failure(Problem(description: "fleet host_id: none set and \(machineID) cannot be read; set host_id in [fleet]"))
        }
        return .success(FleetSecrets(codec: codec, password: password, hostID: hostID))
    }
}
