import ArgumentParser
import Foundation
import NIOHTTP1
import TokendCore
import TokendIO

/// `tokend token NAME`: print a token from the running daemon.
struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Print an instance's current token.",
        discussion: """
            Exit status: 0 ok, 1 an error from the daemon (unknown instance, no valid token), 2 usage,
            3 the socket cannot be reached.

            Examples:
              curl -H "Authorization: $(tokend token acme-prod --format header)" https://api.example.com/orders
              tokend token acme-prod --min-valid 300 --format json
            """
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case json, raw, header
    }

    @OptionGroup var socket: SocketOption

    @Argument(help: "The instance name.")
    var name: String

    @Option(help: "json, raw (the bare token) or header (\"Bearer <token>\").")
    var format: Format = .raw

    @Option(help: "Seconds the token must still be valid; a shorter-lived one is refreshed first (and waited for).")
    var minValid: Int?

    func run() throws {
        let path =
            "/v1/tokens/\(FormURLEncoding.encode(name))?format=\(format.rawValue)"
            + (minValid.map { "&min_valid=\($0)" } ?? "")
        let client = socket.client
        let response = try ask(client, path: path)
        guard response.status == 200 else { throw fail(response) }
        print(response.text.hasSuffix("\n") ? String(response.text.dropLast()) : response.text)
    }
}
