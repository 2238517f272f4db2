import ArgumentParser
import Dispatch
import Foundation
import NIOHTTP1
import TokendCore
import TokendIO

/// `--socket` for the commands that talk to a running daemon.
struct SocketOption: ParsableArguments {
    @Option(help: "Unix socket path (default: $TOKEND_SOCKET, $RUNTIME_DIRECTORY/tokend.sock, /run/tokend/tokend.sock).")
    var socket: String?

    var client: APIClient {
        let path = DaemonPaths.resolve(
            configDirectory: nil,
            stateDirectory: nil,
            socket: socket,
            environment: ProcessInfo.processInfo.environment
        ).socketPath
        return APIClient(socketPath: path)
    }
}

/// Runs async client work from a synchronous command (the command tree stays synchronous for `run`).
private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}

func waitFor<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try box.result!.get()
}

func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Prints the daemon's error message for a failed answer and exits non-zero.
func fail(_ response: APIClient.Response) -> ExitCode {
    if let body = try? JSONDecoder().decode(API.ErrorBody.self, from: Data(response.body)) {
        printError("tokend: \(body.error): \(body.message)")
    } else {
        printError("tokend: HTTP \(response.status)")
    }
    return ExitCode(response.status == 404 ? 3 : 1)
}

/// `tokend token NAME`: print a token from the running daemon.
struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print an instance's current token (exit 1: no valid token, 3: unknown instance)."
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
        let response = try waitFor { try await client.send(path: path) }
        guard response.status == 200 else { throw fail(response) }
        print(response.text.hasSuffix("\n") ? String(response.text.dropLast()) : response.text)
    }
}

/// `tokend status`: every instance the caller may see.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show every instance's state, expiry, next refresh and last error.")

    @OptionGroup var socket: SocketOption

    @Flag(help: "Print the daemon's JSON as it is.")
    var json = false

    func run() throws {
        let client = socket.client
        let response = try waitFor { try await client.send(path: "/v1/instances") }
        guard response.status == 200 else { throw fail(response) }
        if json {
            print(response.text, terminator: "")
            return
        }
        let body = try JSONDecoder().decode(API.InstancesBody.self, from: Data(response.body))
        print(Self.table(body.instances, now: Date()))
    }

    static func table(_ instances: [API.InstanceStatus], now: Date) -> String {
        func inSeconds(_ epoch: Int?) -> String {
            guard let epoch else { return "-" }
            return "\(epoch - Int(now.timeIntervalSince1970))s"
        }
        var rows = [["INSTANCE", "STATE", "EXPIRES IN", "NEXT REFRESH", "OUTAGE BUDGET", "FAILURES", "LAST ERROR"]]
        for status in instances {
            rows.append([
                status.name, status.state, inSeconds(status.expires_at), inSeconds(status.next_refresh),
                "\(status.outage_budget_seconds)s", "\(status.consecutive_failures)",
                status.last_error.map { "\($0.code): \($0.message)" } ?? "-",
            ])
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

/// `tokend refresh NAME`: refresh now (admin).
struct Refresh: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Refresh an instance's token now (root, the daemon's user or admin_group).")

    @OptionGroup var socket: SocketOption

    @Argument(help: "The instance name.")
    var name: String

    func run() throws {
        let client = socket.client
        let path = "/v1/instances/\(FormURLEncoding.encode(name))/refresh"
        let response = try waitFor { try await client.send(method: .POST, path: path) }
        guard response.status == 202 else { throw fail(response) }
        print("\(name): refresh started")
    }
}
