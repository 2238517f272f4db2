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
              tokend token shop --curl-header | curl -H @- "$(tokend token shop --format apply | jq -r .values.url)/orders"
              tokend token acme-prod --min-valid 300 --format json
            """
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case json, raw, header, apply
    }

    @OptionGroup var socket: SocketOption

    @Argument(help: "The instance name.")
    var name: String

    @Option(
        help:
            "json, raw (the bare token), header (the value of the connector's [apply] header, \"Bearer <token>\" by default) or apply (JSON: headers and exposed values)."
    )
    var format: Format = .raw

    @Flag(help: "Print the [apply] header as one \"Name: value\" line, for curl -H @-.")
    var curlHeader = false

    @Option(help: "Seconds the token must still be valid; a shorter-lived one is refreshed first (and waited for).")
    var minValid: Int?

    func run() throws {
        try Self.fetch(client: socket.client, name: name, format: format, curlHeader: curlHeader, minValid: minValid)
    }

    /// Asks the daemon and prints the answer: `run()`'s work, shared with the parser-free fast path (`QuickCommand`).
    static func fetch(client: APIClient, name: String, format: Format, curlHeader: Bool, minValid: Int?) throws {
        let path =
            "/v1/tokens/\(FormURLEncoding.encode(name))?format=\(curlHeader ? Format.apply.rawValue : format.rawValue)"
            + (minValid.map { "&min_valid=\($0)" } ?? "")
        let response = try ask(client, path: path)
        guard response.status == 200 else { throw fail(response) }
        guard curlHeader else {
            print(response.text.hasSuffix("\n") ? String(response.text.dropLast()) : response.text)
            return
        }
        guard let applied = try? JSONDecoder().decode(API.ApplyBody.self, from: Data(response.text.utf8)) else {
            printError("tokend: the daemon's apply answer is not what this tokend expects")
            throw ExitCode(1)
        }
        for (name, value) in applied.headers.sorted(by: { $0.key < $1.key }) {
            print("\(name): \(value)")
        }
    }

    func validate() throws {
        if curlHeader, format != .raw {
            throw ValidationError("--curl-header prints the [apply] header; leave out --format")
        }
    }
}
