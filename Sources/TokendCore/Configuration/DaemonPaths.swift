/// Where the daemon finds its config, keeps its cache and listens (SPEC §2): flag > `TOKEND_*` env >
/// systemd-provided env > default.
public struct DaemonPaths: Sendable, Hashable {
    public var configDirectory: String
    public var stateDirectory: String
    public var socketPath: String
    public var credentialsDirectory: String?

    public init(configDirectory: String, stateDirectory: String, socketPath: String, credentialsDirectory: String?) {
        self.configDirectory = configDirectory
        self.stateDirectory = stateDirectory
        self.socketPath = socketPath
        self.credentialsDirectory = credentialsDirectory
    }

    public static func resolve(
        configDirectory: String?,
        stateDirectory: String?,
        socket: String?,
        environment: [String: String]
    ) -> DaemonPaths {
        func nonEmpty(_ key: String) -> String? {
            guard let value = environment[key], !value.isEmpty else { return nil }
            return value
        }
        // systemd may pass several colon-separated directories; the first is ours.
        func firstSystemd(_ key: String) -> String? {
            nonEmpty(key).flatMap { $0.split(separator: ":").first.map(String.init) }
        }
        let config = configDirectory ?? nonEmpty("TOKEND_CONFIG_DIR") ?? firstSystemd("CONFIGURATION_DIRECTORY") ?? "/etc/tokend"
        let state = stateDirectory ?? nonEmpty("TOKEND_STATE_DIR") ?? firstSystemd("STATE_DIRECTORY") ?? "/var/lib/tokend"
        let runtimeSocket = firstSystemd("RUNTIME_DIRECTORY").map { $0 + "/tokend.sock" }
        let socketPath = socket ?? nonEmpty("TOKEND_SOCKET") ?? runtimeSocket ?? "/run/tokend/tokend.sock"
        return DaemonPaths(
            configDirectory: config,
            stateDirectory: state,
            socketPath: socketPath,
            credentialsDirectory: nonEmpty("CREDENTIALS_DIRECTORY")
        )
    }
}
