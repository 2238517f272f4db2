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
    guard let result = box.result else { preconditionFailure("waitFor: the task signalled without a result") }
    return try result.get()
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
        return try waitFor { try await client.send(method: method, path: path) }
    } catch let error as APIClient.Unreachable {
        printError("tokend: \(error.description)")
        throw ExitCode(3)
    }
}
