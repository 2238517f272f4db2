import ArgumentParser
import Foundation
import NIOHTTP1
import TokendCore
import TokendIO

/// `tokend refresh NAME`: refresh now (admin).
struct Refresh: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refresh",
        abstract: "Refresh an instance's token now (root, the daemon's user or admin_group).",
        discussion: """
            A refresh already in flight is joined, not duplicated.

            Example:
              tokend refresh acme-prod
            """
    )

    @OptionGroup var socket: SocketOption

    @Argument(help: "The instance name.")
    var name: String

    func run() throws {
        try Self.start(client: socket.client, name: name)
    }

    /// Asks the daemon to refresh `name`: `run()`'s work, shared with `QuickCommand`.
    static func start(client: APIClient, name: String) throws {
        let path = "/v1/instances/\(FormURLEncoding.encode(name))/refresh"
        let response = try ask(client, method: .POST, path: path)
        guard response.status == 202 else { throw fail(response) }
        print("\(name): refresh started")
    }
}
