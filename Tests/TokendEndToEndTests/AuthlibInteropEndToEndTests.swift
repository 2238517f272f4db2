import Foundation
import Testing
import TokendTestSupport

/// Interop: the RFC 7523 §2.1 JWT-bearer grant against Authlib's implementation of it (`JWTBearerGrant` behind a
/// minimal `AuthorizationServer`, `Tests/Interop/authlib_jwt_bearer_server.py`), not against tokend's own test server.
///
/// Authlib is required, not optional: `scripts/install-deps` installs Debian's python3-authlib, and without it this
/// test fails.
@Suite(.serialized, .timeLimit(.minutes(2))) struct AuthlibInteropEndToEndTests {
    struct Missing: Error, CustomStringConvertible {
        var description: String
    }

    /// A Python 3 that imports Authlib's RFC 7523 grant: Debian's first (python3-authlib), then the one on PATH.
    static func pythonWithAuthlib() throws -> String {
        for candidate in ["/usr/bin/python3", "/usr/local/bin/python3", "python3"] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [candidate, "-c", "import authlib.oauth2.rfc7523, authlib.jose"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            process.standardInput = FileHandle.nullDevice
            guard (try? process.run()) != nil else { continue }
            process.waitUntilExit()
            if process.terminationStatus == 0 { return candidate }
        }
        throw Missing(description: "no python3 with Authlib: run scripts/install-deps (it installs python3-authlib)")
    }

    static var script: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<2 { url.deleteLastPathComponent() }
        return url.appendingPathComponent("Interop/authlib_jwt_bearer_server.py").path
    }

    @Test func tokendObtainsTokensFromAuthlibsJWTBearerGrant() async throws {
        let python = try Self.pythonWithAuthlib()
        try await DaemonHarness.with { harness in
            let pki = try TestPKI.make()
            harness.onTearDown { pki.remove() }
            let work = pki.directory
            let accepted = work + "/accepted.log"
            let output = work + "/authlib.out"
            for file in [output, accepted, work + "/authlib.err"] { FileManager.default.createFile(atPath: file, contents: nil) }

            // The audience is fixed before the port is known: Authlib checks aud against it, tokend sends it as a claim.
            let audience = "https://oauth2.example.com/token"
            let endpoint = Process()
            endpoint.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            endpoint.arguments = [python, Self.script, "robot@project.iam.example.com", pki.rsaPublicKey, audience, accepted, "100"]
            endpoint.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
            endpoint.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: work + "/authlib.err"))
            endpoint.standardInput = FileHandle.nullDevice
            try endpoint.run()
            harness.onTearDown {
                if endpoint.isRunning { endpoint.terminate() }
                endpoint.waitUntilExit()
            }
            let port = Locked<Int?>(nil)
            try await eventually("Authlib's endpoint to listen") {
                let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
                guard let line = text.split(separator: "\n").first, line.hasPrefix("port "), let number = Int(line.dropFirst(5)) else {
                    return false
                }
                port.set(number)
                return true
            }
            let tokenURL = "http://127.0.0.1:\(try #require(port.value))/token"

            try harness.writeConnector(
                "google-sa",
                """
                token_url   = "\(tokenURL)"
                client_auth = "none"

                [assertion]
                alg = "RS256"
                [assertion.claims]
                aud = "\(audience)"
                sub = ""

                \(SignedAssertionEndToEndTests.jwtBearerBody)
                """
            )
            let key = try harness.writeSecret("sa.key", try pki.read(pki.rsaKey))
            try harness.writeRaw(
                "gcp",
                "connector = \"google-sa\"\n[variables]\nclient_id = \"robot@project.iam.example.com\"\nprivate_key = { file = \"\(key)\" }\n"
            )
            try harness.start()
            try await harness.waitUntilReady()
            let token = try await harness.token("gcp")
            #expect(
                token?.hasPrefix("authlib-") == true,
                "\(harness.log)\n\((try? String(contentsOfFile: work + "/authlib.err", encoding: .utf8)) ?? "")"
            )

            // Authlib's tokens live 3 s: tokend refreshes, and each refresh must bring an assertion Authlib has not
            // seen (it refuses a replayed jti with invalid_grant).
            try await eventually("three assertions accepted by Authlib", timeout: 20) {
                ((try? String(contentsOfFile: accepted, encoding: .utf8)) ?? "").split(separator: "\n").count >= 3
            }
            let lines = try String(contentsOfFile: accepted, encoding: .utf8).split(separator: "\n")
            let jtis = lines.map { $0.split(separator: " ")[0] }
            #expect(Set(jtis).count == jtis.count)
            for fields in lines.map({ $0.split(separator: " ").compactMap { Int($0) } }) where fields.count == 2 {
                #expect(fields[1] - fields[0] == 60, "exp = iat + the default lifetime")
            }
            #expect(!harness.log.contains("invalid_grant"), "\(harness.log)")
            #expect(try await harness.token("gcp")?.hasPrefix("authlib-") == true)
        }
    }
}

/// A value shared with a `@Sendable` closure.
final class Locked<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value

    init(_ value: Value) { stored = value }

    var value: Value { lock.withLock { stored } }

    func set(_ value: Value) { lock.withLock { stored = value } }
}
