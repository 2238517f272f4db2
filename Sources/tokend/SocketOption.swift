import ArgumentParser
import Foundation
import NIOHTTP1
import TokendCore
import TokendIO

/// `--socket` for the commands that talk to a running daemon.
struct SocketOption: ParsableArguments {
    @Option(help: "Unix socket path (default: $TOKEND_SOCKET, $RUNTIME_DIRECTORY/tokend.sock, /run/tokend/tokend.sock).")
    var socket: String?

    var client: APIClient { Self.client(socket: socket) }

    /// The client for `--socket` (nil: `TOKEND_SOCKET`, `RUNTIME_DIRECTORY`, the default path; SPEC §2).
    static func client(socket: String?) -> APIClient {
        APIClient(socketPath: DaemonPaths.socketPath(flag: socket) { getenv($0).map { String(cString: $0) } })
    }
}

func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Prints the daemon's error message for a failed answer; exit status 1 (an error from the daemon).
func fail(_ response: APIClient.Response) -> ExitCode {
    if let body = try? JSONDecoder().decode(API.ErrorBody.self, from: Data(response.body)) {
        printError("tokend: \(body.error): \(body.message)")
    } else {
        printError("tokend: HTTP \(response.status)")
    }
    return ExitCode(1)
}

/// Sends one request for a CLI command; exit status 3 with the reason when the socket cannot be reached.
func ask(_ client: APIClient, method: HTTPMethod = .GET, path: String) throws -> APIClient.Response {
    do {
        return try client.send(method: method, path: path)
    } catch let error as APIClient.Unreachable {
        printError("tokend: \(error.description)")
        throw ExitCode(3)
    }
}
