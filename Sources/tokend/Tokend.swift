import ArgumentParser
import Foundation
import TokendCore

/// The `tokend` command tree: the daemon and its operator commands.
@main
struct Tokend: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "tokend",
        abstract: "Keeps OAuth 2.0 client-credentials tokens fresh and serves them on a Unix socket.",
        version: version,
        // Every subcommand names itself (`commandName`): otherwise ArgumentParser derives each name with
        // String(describing:), whose protocol conformance lookups scan the whole binary on every start.
        subcommands: [Run.self, Check.self, Token.self, Status.self, Refresh.self, TestRequest.self]
    )

    /// ArgumentParser's flow, except that usage errors exit 2 (as documented) instead of 64, and that the everyday
    /// `token`, `status` and `refresh` forms skip the parser (``QuickCommand``).
    static func main() {
        do {
            if let quick = QuickCommand.fromCommandLine() {
                try quick.run()
                return
            }
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// Options shared by the commands that read the config directory.
struct PathOptions: ParsableArguments {
    @Option(help: "Config directory (default: $TOKEND_CONFIG_DIR, $CONFIGURATION_DIRECTORY, /etc/tokend).")
    var configDir: String?

    @Option(help: "Cache directory (default: $TOKEND_STATE_DIR, $STATE_DIRECTORY, /var/lib/tokend).")
    var stateDir: String?

    @Option(help: "Unix socket path (default: $TOKEND_SOCKET, $RUNTIME_DIRECTORY/tokend.sock, /run/tokend/tokend.sock).")
    var socket: String?

    /// The paths after flags, `TOKEND_*` and systemd's variables (SPEC §2).
    var resolved: DaemonPaths {
        DaemonPaths.resolve(
            configDirectory: configDir,
            stateDirectory: stateDir,
            socket: socket,
            environment: ProcessInfo.processInfo.environment
        )
    }
}
