import ArgumentParser
import Foundation
import NIOHTTP1
import TokendCore
import TokendIO

/// `tokend status`: every instance the caller may see.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show every instance's state, expiry, next refresh and last error.",
        discussion: """
            Lists the instances this caller may read; never tokens or secrets.

            Examples:
              tokend status
              tokend status --json | jq '.instances[] | select(.state != "valid")'
            """
    )

    @OptionGroup var socket: SocketOption

    @Flag(help: "Print the daemon's JSON as it is.")
    var json = false

    func run() throws {
        try Self.show(client: socket.client, json: json)
    }

    /// Asks the daemon and prints the table (or its JSON): `run()`'s work, shared with `QuickCommand`.
    static func show(client: APIClient, json: Bool) throws {
        let response = try ask(client, path: "/v1/instances")
        guard response.status == 200 else { throw fail(response) }
        if json {
            print(response.text, terminator: "")
            return
        }
        let body = try JSONDecoder().decode(API.InstancesBody.self, from: Data(response.body))
        print(table(body.instances, now: Date()))
        if let fleet = body.fleet {
            print("\nfleet: \(fleet.state)\(fleet.error.map { " (\($0))" } ?? "") as host \(fleet.host_id)")
        }
        if let errors = body.config_errors, !errors.isEmpty {
            print("\nconfig errors (these files are not applied; instances they defined keep their last good definition):")
            for error in errors { print("  \(error)") }
        }
    }

    static func table(_ instances: [API.InstanceStatus], now: Date) -> String {
        func inSeconds(_ epoch: Int?) -> String {
            guard let epoch else { return "-" }
            return "\(epoch - Int(now.timeIntervalSince1970))s"
        }
        let fleet = instances.contains { $0.fleet != nil }
        var rows = [
            ["INSTANCE", "STATE", "EXPIRES IN", "NEXT REFRESH", "OUTAGE BUDGET", "FAILURES"] + (fleet ? ["FLEET"] : []) + ["LAST ERROR"]
        ]
        for status in instances {
            rows.append(
                [
                    status.name, status.state, inSeconds(status.expires_at), inSeconds(status.next_refresh),
                    "\(status.outage_budget_seconds)s", "\(status.consecutive_failures)",
                ] + (fleet ? [status.fleet ?? "-"] : []) + [status.last_error.map { "\($0.code): \($0.message)" } ?? "-"]
            )
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
