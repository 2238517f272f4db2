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
        let lookup = { (key: String) in environment[key] }
        let config =
            configDirectory ?? nonEmpty("TOKEND_CONFIG_DIR", lookup) ?? firstSystemd("CONFIGURATION_DIRECTORY", lookup) ?? "/etc/tokend"
        let state = stateDirectory ?? nonEmpty("TOKEND_STATE_DIR", lookup) ?? firstSystemd("STATE_DIRECTORY", lookup) ?? "/var/lib/tokend"
        return DaemonPaths(
            configDirectory: config,
            stateDirectory: state,
            socketPath: socketPath(flag: socket, lookup: lookup),
            credentialsDirectory: nonEmpty("CREDENTIALS_DIRECTORY", lookup)
        )
    }

    /// The socket path alone, by the same order, reading the environment through `lookup`.
    ///
    /// The CLI passes `getenv`: building ProcessInfo's environment dictionary costs a short-lived command more than
    /// its request (issue #21).
    public static func socketPath(flag: String?, lookup: (String) -> String?) -> String {
        let runtimeSocket = firstSystemd("RUNTIME_DIRECTORY", lookup).map { $0 + "/tokend.sock" }
        return flag ?? nonEmpty("TOKEND_SOCKET", lookup) ?? runtimeSocket ?? "/run/tokend/tokend.sock"
    }

    private static func nonEmpty(_ key: String, _ lookup: (String) -> String?) -> String? {
        guard let value = lookup(key), !value.isEmpty else { return nil }
        return value
    }

    /// systemd may pass several colon-separated directories; the first is ours.
    private static func firstSystemd(_ key: String, _ lookup: (String) -> String?) -> String? {
        nonEmpty(key, lookup).flatMap { $0.split(separator: ":").first.map(String.init) }
    }
}
