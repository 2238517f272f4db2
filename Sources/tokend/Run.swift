import ArgumentParser
import Foundation
import TokendCore
import TokendDaemon

/// `tokend run`: the daemon.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the daemon (systemd Type=notify).",
        discussion: """
            SIGHUP reloads the config directory, SIGTERM or SIGINT stops cleanly (exit 0).

            Examples:
              tokend run                                  # /etc/tokend, /var/lib/tokend, /run/tokend/tokend.sock
              tokend run --config-dir ./examples --state-dir /tmp/tokend-state --socket /tmp/tokend.sock
              tokend run --credentials-socket /run/tokend/credentials.sock
            """
    )

    @OptionGroup var paths: PathOptions

    @Option(
        help: ArgumentHelp(
            "credentials.sock for systemd's LoadCredential=ID:PATH (default: credentials.sock beside the socket; none: no such socket).",
            valueName: "path"
        )
    )
    var credentialsSocket: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (overrides log_level).")
    var logLevel: String?

    #if DEBUG
    /// Test hook, in debug builds only: SIGUSR2 blocks the scheduler queue so that the watchdog pings stop.
    ///
    /// `SystemdServiceTests` uses it; a release build has no such flag and rejects it as an unknown option.
    @Flag(help: .hidden) var debugStallOnSigusr2 = false
    #endif

    func validate() throws {
        if let logLevel, !DaemonSettings.logLevels.contains(logLevel) {
            throw ValidationError("--log-level must be one of \(DaemonSettings.logLevels.joined(separator: ", "))")
        }
    }

    func run() throws {
        let resolved = paths.resolved
        var options = Daemon.Options(paths: resolved, logLevelOverride: logLevel)
        options.credentialsSocket = credentialsSocket
        #if DEBUG
        options.stallOnSIGUSR2 = debugStallOnSigusr2
        #endif
        Foundation.exit(Daemon.run(options: options))
    }
}
