import ArgumentParser
import Foundation
import TokendCore
import TokendIO

/// `tokend check`: validates a config directory the way `run` and a reload would.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a config directory; prints `file:line: message` lines, exits 1 on any error.",
        discussion: """
            Reports exactly what `run` and a reload would. Secret files and credentials are read, unless \
            --skip-credentials is given (tokend.service's ExecReload= uses it: credentials only change on a restart).

            Examples:
              tokend check --config-dir /etc/tokend
              tokend check --config-dir /etc/tokend --show acme-prod   # the rendered request, secrets redacted
            """
    )

    @OptionGroup var paths: PathOptions

    @Option(name: .customLong("show"), help: "Print the rendered token request of this instance (secrets redacted).")
    var showInstance: String?

    @Flag(help: "Do not read { credential = \"…\" } values; check everything else.")
    var skipCredentials = false

    func run() throws {
        let resolved = paths.resolved
        let directory = ConfigDirectory(
            path: resolved.configDirectory,
            credentialsDirectory: resolved.credentialsDirectory,
            readsCredentials: !skipCredentials
        )
        let loaded: ConfigLoader.Loaded
        do {
            loaded = try directory.load()
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        for diagnostic in loaded.diagnostics {
            printError(diagnostic.description)
        }
        var errors = loaded.errors.count
        let warnings = loaded.diagnostics.count - errors
        // [fleet]'s key and password are read as the daemon would at start (never printed).
        if let fleet = loaded.settings?.fleet, !(skipCredentials && Self.usesCredentials(fleet)) {
            if case .failure(let problem) = FleetSecrets.read(fleet, credentialsDirectory: resolved.credentialsDirectory) {
                printError("\(resolved.configDirectory)/tokend.toml: [fleet]: \(problem)")
                errors += 1
            }
        }
        print("\(resolved.configDirectory): \(loaded.instances.count) instance(s) valid, \(errors) error(s), \(warnings) warning(s)")
        if let metrics = loaded.settings?.metrics, metrics != MetricsSettings() {
            // A reload logs the same when the table changed: the listener and the textfile are set up at start only.
            print("note: [metrics] takes effect at restart: a reload (SIGHUP) does not rebind the listener or move the textfile")
        }
        if let name = showInstance {
            guard let resolved = loaded.instances[name] else {
                printError("no valid instance named '\(name)'")
                throw ExitCode(1)
            }
            print("")
            print(TokenRequestBuilder.describe(resolved))
        }
        if errors > 0 { throw ExitCode(1) }
    }

    /// Whether the fleet's key or password is a systemd credential (not readable outside the unit).
    static func usesCredentials(_ fleet: FleetSettings) -> Bool {
        [fleet.key, fleet.password].contains { if case .credential? = $0 { true } else { false } }
    }

}
