import Foundation
import TokendCore
import TokendTestSupport

/// A local OAuth 2.0 token endpoint for the demo: `tokend-example-endpoint [--port 9101] [--lifetime 20]
/// [--client ID:SECRET]`. Issues a fresh token per request and prints one line per request (never the token).
@main
struct ExampleEndpoint {
    static func main() async throws {
        var port = 9101
        var lifetime = 20
        var client: (String, String)?
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            switch argument {
            case "--port": port = arguments.next().flatMap(Int.init) ?? port
            case "--lifetime": lifetime = arguments.next().flatMap(Int.init) ?? lifetime
            case "--client":
                if let pair = arguments.next(), let colon = pair.firstIndex(of: ":") {
                    client = (String(pair[..<colon]), String(pair[pair.index(after: colon)...]))
                }
            default:
                FileHandle.standardError.write(Data("usage: tokend-example-endpoint [--port N] [--lifetime S] [--client ID:SECRET]\n".utf8))
                exit(2)
            }
        }
        let server = LocalTokenServer(lifetime: lifetime) { token, lifetime in
            let line = "endpoint: issued token \(TokenFingerprint.of(Secret(token))) (sha256 prefix), expires_in=\(lifetime)\n"
            FileHandle.standardOutput.write(Data(line.utf8))
        }
        if let (id, secret) = client {
            server.expectClient(id: id, secret: secret)
        }
        try await server.start(port: port)
        FileHandle.standardOutput.write(Data("endpoint: listening on \(server.tokenURL)\n".utf8))
        while true {
            try await Task.sleep(for: .seconds(3600))
        }
    }
}
