import Foundation
import TokendCore
import TokendTestSupport

/// A local OAuth 2.0 token endpoint for the demo:
/// `tokend-example-endpoint [--port 9101] [--lifetime 20] [--client ID=SECRET_FILE …]`.
///
/// Issues a fresh token per request and prints one line per token (its fingerprint, never the token). With `--client`,
/// only those clients get tokens (others: 401 invalid_client).
///
/// `tokend-example-endpoint --static-unix-socket PATH --static-body FILE` is the benchmark's bare SwiftNIO server
/// instead: the body of FILE for every request on the Unix socket PATH (see ``StaticUnixHTTPServer``); with `--raw`,
/// SwiftNIO without its HTTP handlers, the floor under any SwiftNIO server; with `--decode`, only NIOHTTP1's decoder
/// before fixed response bytes (``StaticUnixHTTPServer/serveRaw(path:body:decode:)``).
@main
struct ExampleEndpoint {
    static func main() async throws {
        var port = 9101
        var lifetime = 20
        var clients: [(String, String)] = []
        var staticSocket: String?
        var staticBody: String?
        var raw = false
        var decode = false
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            switch argument {
            case "--port": port = arguments.next().flatMap(Int.init) ?? port
            case "--lifetime": lifetime = arguments.next().flatMap(Int.init) ?? lifetime
            case "--static-unix-socket": staticSocket = arguments.next()
            case "--static-body": staticBody = arguments.next()
            case "--raw": raw = true
            case "--decode": decode = true
            case "--client":
                guard let pair = arguments.next(), let equals = pair.firstIndex(of: "="),
                    let secret = try? String(contentsOfFile: String(pair[pair.index(after: equals)...]), encoding: .utf8)
                else { usage() }
                let trimmed = secret.hasSuffix("\n") ? String(secret.dropLast()) : secret
                clients.append((String(pair[..<equals]), trimmed))
            default:
                usage()
            }
        }
        if let staticSocket {
            guard let staticBody, let body = FileManager.default.contents(atPath: staticBody) else { usage() }
            if raw { try await StaticUnixHTTPServer.serveRaw(path: staticSocket, body: Array(body)) }
            if decode { try await StaticUnixHTTPServer.serveRaw(path: staticSocket, body: Array(body), decode: true) }
            try await StaticUnixHTTPServer.serve(path: staticSocket, body: Array(body))
        }
        let server = LocalTokenServer(lifetime: lifetime) { token, lifetime in
            let line = "endpoint: issued token \(TokenFingerprint.of(Secret(token))) (sha256 prefix), expires_in=\(lifetime)\n"
            FileHandle.standardOutput.write(Data(line.utf8))
        }
        for (id, secret) in clients {
            server.expectClient(id: id, secret: secret)
        }
        try await server.start(port: port)
        FileHandle.standardOutput.write(Data("endpoint: listening on \(server.tokenURL)\n".utf8))
        while true {
            try await Task.sleep(for: .seconds(3600))
        }
    }

    static func usage() -> Never {
        let text =
            "usage: tokend-example-endpoint [--port N] [--lifetime SECONDS] [--client ID=SECRET_FILE ...]\n"
            + "       tokend-example-endpoint --static-unix-socket PATH --static-body FILE [--raw | --decode]\n"
        FileHandle.standardError.write(Data(text.utf8))
        exit(2)
    }
}
