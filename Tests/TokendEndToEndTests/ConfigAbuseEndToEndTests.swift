import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Hostile config directories and reload storms: huge files, deep nesting, binary garbage, 10,000 variables,
/// self-referencing templates, non-UTF-8, a FIFO, files that change or vanish while SIGHUPs rain in.
///
/// tokend must never crash or hang, never lose an instance, and keep running the last good definition.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ConfigAbuseEndToEndTests {
    /// An instance file no one should write, and what `tokend check` (and a reload) must say about it: the diagnostic
    /// after the file's path (`:LINE: …` or `: …`; `{path}` stands for the path), or nil for a file that looks
    /// hostile but is a valid instance (variable values are literals, never templates: `{{…}}` in them is just text).
    struct HostileFile {
        var name: String
        var bytes: [UInt8]
        var diagnosis: String?
    }

    static func hostileFiles(tokenURL: String) -> [HostileFile] {
        var random = SeededGenerator(seed: 0xC0FF_EE)
        let garbage = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &random) }
        let printable = String((0..<4096).map { _ in Character(UnicodeScalar(UInt8.random(in: 1...127, using: &random))) })
        let head = "token_url = \"\(tokenURL)\"\n"
        var tenThousand = head + "[variables]\nclient_id = \"many\"\nclient_secret = \"x-many\"\n"
        for index in 0..<10_000 { tenThousand += "v\(index) = \"{{v\(index + 1)}}\"\n" }
        let nested = ":1: keys or values nested deeper than 32 levels"
        func file(_ name: String, _ text: String, _ diagnosis: String?) -> HostileFile {
            HostileFile(name: name, bytes: Array(text.utf8), diagnosis: diagnosis)
        }
        return [
            file(
                "huge",
                String(repeating: "# padding padding padding padding padding padding\n", count: 45_000),
                ": file {path} is larger than 1 MiB"
            ),
            file(
                "big-but-allowed",
                head + String(repeating: "# \(String(repeating: "c", count: 1000))\n", count: 900),
                ": variables.client_id: missing required variable"
            ),
            file("deep-arrays", "x = " + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "\n", nested),
            file(
                "deep-inline-tables",
                "x = " + String(repeating: "{a=", count: 50_000) + "1" + String(repeating: "}", count: 50_000) + "\n",
                nested
            ),
            file("deep-table-header", "[" + String(repeating: "a.", count: 50_000) + "b]\nc = 1\n", nested),
            file("long-line", head + "x = \"" + String(repeating: "y", count: 900_000) + "\"\n", ":2: x: unknown key"),
            HostileFile(name: "binary-garbage", bytes: garbage, diagnosis: ": file {path} is not UTF-8 text"),
            file("printable-garbage", printable, ":1: TOML syntax error: "),
            HostileFile(
                name: "non-utf8",
                bytes: Array(head.utf8) + [0x5B, 0x76, 0x61, 0x72, 0x5D, 0x0A, 0x61, 0x20, 0x3D, 0x20, 0x22, 0xFF, 0xFE, 0xC0, 0x22, 0x0A],
                diagnosis: ": file {path} is not UTF-8 text"
            ),
            file(
                "nul-bytes",
                head + "[variables]\nclient_id = \"a\u{0}b\"\nclient_secret = \"c\"\n",
                ": file contains a NUL byte; expected TOML text"
            ),
            file("ten-thousand-variables", tenThousand, nil),
            file(
                "self-reference",
                head
                    + "[variables]\nclient_id = \"{{client_id}}\"\nclient_secret = \"{{client_secret}}{{client_secret}}\"\nscope = \"{{scope}}\"\n",
                nil
            ),
            file(
                "mutual-reference",
                "token_url = \"{{a}}\"\n[variables]\na = \"{{b}}\"\nb = \"{{a}}\"\nclient_id = \"{{a}}\"\nclient_secret = \"{{b}}\"\n",
                ":1: token_url: expected an absolute http(s) URL (rendered as {{b}})"
            ),
            file("unclosed-braces", head + "[variables]\nclient_id = \"{{{{{{{{\"\nclient_secret = \"}}}}{{\"\n", nil),
            file("duplicate-keys", head + head + "[variables]\n[variables]\n", ":2: TOML syntax error: "),
        ]
    }

    /// `tokend check` on a directory that holds one good instance and one hostile file: it finishes in time and says
    /// what it makes of the file.
    ///
    /// A file with a diagnosis exits 1 with exactly that diagnosis for it (and nothing on the good one); the others are
    /// valid instances: exit 0, counted as valid, with the warning an inline secret earns naming the file. A crash, a
    /// hang, a silent exit 0 or a vague error fails.
    @Test func checkDiagnosesEveryHostileFileWithoutCrashing() async throws {
        try await DaemonHarness.with { harness in
            try harness.writeInstance("good")
            for file in Self.hostileFiles(tokenURL: harness.endpoint.tokenURL) {
                let path = "\(harness.configDir)/instances/\(file.name).toml"
                try Data(file.bytes).write(to: URL(fileURLWithPath: path))
                let started = Stopwatch()
                let result = try runCommand([try DaemonHarness.binaryPath(), "check", "--config-dir", harness.configDir], timeout: 30)
                let took = started.elapsed
                #expect(took < 20, "\(file.name): check took \(took) s")
                let lines = result.stderr.split(separator: "\n").map(String.init)
                #expect(!result.stderr.contains("instances/good.toml"), "\(file.name): \(result.stderr.prefix(500))")
                if let diagnosis = file.diagnosis {
                    let expected = path + diagnosis.replacingOccurrences(of: "{path}", with: path)
                    #expect(result.status == 1, "\(file.name): exit \(result.status): \(result.stderr.suffix(500))")
                    #expect(lines.contains { $0.hasPrefix(expected) }, "\(file.name): wanted \(expected); got \(result.stderr.prefix(500))")
                    #expect(result.stdout.contains("1 instance(s) valid"), "\(file.name): \(result.stdout)")
                } else {
                    #expect(result.status == 0, "\(file.name): exit \(result.status): \(result.stderr.suffix(500))")
                    #expect(result.stdout.contains("2 instance(s) valid, 0 error(s)"), "\(file.name): \(result.stdout)")
                    #expect(
                        lines.contains {
                            $0.hasPrefix(path + ":") && $0.contains(": warning: variables.client_secret: secret written inline")
                        },
                        "\(file.name): \(result.stderr.prefix(500))"
                    )
                }
                // Diagnostics stay bounded whatever the file holds.
                #expect(result.stderr.utf8.count < 2_000_000, "\(file.name): \(result.stderr.utf8.count) bytes of diagnostics")
                try FileManager.default.removeItem(atPath: path)
            }
        }
    }

    @Test func aReloadFullOfHostileFilesKeepsTheLastGoodDefinitions() async throws {
        try await DaemonHarness.withRunning("steady", "other") { harness in
            let steady = try #require(try await harness.token("steady"))
            let other = try #require(try await harness.token("other"))
            let requests = harness.endpoint.requestCount
            for file in Self.hostileFiles(tokenURL: harness.endpoint.tokenURL) {
                try Data(file.bytes).write(to: URL(fileURLWithPath: "\(harness.configDir)/instances/\(file.name).toml"))
            }
            // The good instances' files turn hostile too; a FIFO would block a blocking open(2) forever.
            try Data([0xFF, 0x00, 0x5B, 0x5B]).write(to: URL(fileURLWithPath: "\(harness.configDir)/instances/steady.toml"))
            try FileManager.default.removeItem(atPath: "\(harness.configDir)/instances/other.toml")
            #expect(mkfifo("\(harness.configDir)/instances/other.toml", 0o644) == 0)
            harness.signal(SIGHUP)
            try await harness.waitUntilReady(count: 2, timeout: 30)
            #expect(harness.process?.isRunning == true)
            #expect(try await harness.token("steady") == steady)
            #expect(try await harness.token("other") == other)
            #expect(harness.loggedConfigErrors.contains { $0.contains("instances/steady.toml") })
            #expect(
                harness.loggedConfigErrors.contains { $0.contains("instances/other.toml") },
                "\(harness.loggedConfigErrors.filter { $0.contains("other") })"
            )
            // The reload reports what `tokend check` does, file by file.
            for file in Self.hostileFiles(tokenURL: harness.endpoint.tokenURL) {
                let path = "\(harness.configDir)/instances/\(file.name).toml"
                if let diagnosis = file.diagnosis {
                    let expected = path + diagnosis.replacingOccurrences(of: "{path}", with: path)
                    #expect(
                        harness.loggedConfigErrors.contains { $0.hasPrefix(expected) },
                        "\(file.name): \(harness.loggedConfigErrors.filter { $0.contains(file.name) })"
                    )
                } else {
                    #expect(!harness.loggedConfigErrors.contains { $0.hasPrefix(path) }, "\(file.name)")
                }
            }
            // Once the files are good again, the unchanged definitions keep their tokens: no request was made for them.
            try harness.writeInstance("steady")
            try FileManager.default.removeItem(atPath: "\(harness.configDir)/instances/other.toml")
            try harness.writeInstance("other")
            harness.signal(SIGHUP)
            try await harness.waitUntilReady(count: 3, timeout: 30)
            #expect(try await harness.token("steady") == steady)
            #expect(try await harness.token("other") == other)
            #expect(
                harness.endpoint.requests.dropFirst(requests).allSatisfy { !["steady", "other"].contains($0.clientCredentials?.id ?? "") }
            )
            #expect(try await harness.stop() == 0)
        }
    }

    /// 100 SIGHUPs in a second while clients read tokens and one instance's file flaps between valid, broken and
    /// missing: no crash, no lost instance, no reader error, unchanged instances keep their tokens.
    @Test func aSIGHUPStormWhileFilesChangeUnderTheReload() async throws {
        let names = (0..<8).map { "steady\($0)" }
        try await DaemonHarness.with { harness in
            for name in names { try harness.writeInstance(name) }
            try harness.writeInstance("flapper")
            try harness.start()
            try await harness.waitUntilReady()
            var expected: [String: String] = [:]
            for name in names {
                let token: String = try #require(try await harness.token(name))
                expected[name] = token
            }

            let readers = harness.readContinuously(names, expected: expected, clients: 8)
            let flapperPath = "\(harness.configDir)/instances/flapper.toml"
            let flapper = Task.detached {
                var random = SeededGenerator(seed: 42)
                var rounds = 0
                while !Task.isCancelled {
                    switch Int.random(in: 0..<4, using: &random) {
                    case 0: try? harness.writeInstance("flapper", scope: "read \(rounds % 3)")
                    case 1: try? FileManager.default.removeItem(atPath: flapperPath)
                    case 2: try? Data("token_url = [[[\n\u{0}".utf8).write(to: URL(fileURLWithPath: flapperPath))
                    default: try? Data(String(repeating: "#", count: 300_000).utf8).write(to: URL(fileURLWithPath: flapperPath))
                    }
                    rounds += 1
                    try? await Task.sleep(for: .milliseconds(3))
                }
                return rounds
            }
            let stormStarted = Stopwatch()
            for _ in 0..<100 {
                harness.signal(SIGHUP)
                try await Task.sleep(for: .milliseconds(10))
            }
            let stormTook = stormStarted.elapsed
            try await Task.sleep(for: .milliseconds(500))
            flapper.cancel()
            let flaps = await flapper.value
            let (served, errors) = await DaemonHarness.finish(readers)
            #expect(harness.process?.isRunning == true, "log: \(harness.log.suffix(2000))")
            #expect(errors.isEmpty, "\(errors.count) reader errors, first: \(errors.prefix(3))")
            #expect(served > 100, "only \(served) tokens served during the storm")
            // A last reload with a good flapper file settles everything.
            try harness.writeInstance("flapper")
            let readies = harness.notify.assignments.filter { $0 == "READY=1" }.count
            harness.signal(SIGHUP)
            try await harness.waitUntilReady(count: readies + 1, timeout: 30)
            try await eventually("the flapper has a token") { try await harness.token("flapper") != nil }
            let listed = try await harness.get("/v1/instances").json(API.InstancesBody.self).instances.map(\.name)
            #expect(Set(listed) == Set(names + ["flapper"]))
            for name in names { #expect(try await harness.token(name) == expected[name]) }
            #expect(harness.endpoint.requests.filter { $0.clientCredentials?.id.hasPrefix("steady") == true }.count == names.count)
            #expect(try await harness.stop() == 0)
            print(
                "SIGHUP storm: 100 signals in \(String(format: "%.2f", stormTook)) s, \(flaps) file changes, \(served) tokens served, \(harness.notify.assignments.filter { $0 == "RELOADING=1" }.count) reloads"
            )
        }
    }
}
