import Foundation
import Testing

@testable import TokendCore

@Suite struct ConfigLoaderTests {
    static let good = """
        token_url = "http://127.0.0.1:9101/token"
        [variables]
        client_id = "a"
        client_secret = { file = "/secrets/a" }
        """

    @Test func goodAndBadFilesAreSeparated() {
        let input = ConfigLoader.Input(
            settings: nil,
            instances: [
                ("good", .success(.init(path: "/c/instances/good.toml", text: Self.good))),
                ("broken", .success(.init(path: "/c/instances/broken.toml", text: "token_url = \n"))),
                (
                    "nosecret",
                    .success(
                        .init(
                            path: "/c/instances/nosecret.toml",
                            text: Self.good.replacingOccurrences(of: "/secrets/a", with: "/secrets/missing")
                        )
                    )
                ),
            ]
        )
        let result = ConfigLoader.load(input) { source in
            source == .file(path: "/secrets/a") ? .success(.init("s3cret\n")) : .failure(.init("file does not exist"))
        }
        #expect(result.settings != nil)
        #expect(Set(result.instances.keys) == ["good"])
        #expect(result.failedInstances == ["broken", "nosecret"])
        #expect(result.errors.count == 2)
        #expect(result.errors[0].file == "/c/instances/broken.toml")
        #expect(result.errors[0].line == 1)
        #expect(result.errors[1].description == "/c/instances/nosecret.toml:4: variables.client_secret: file does not exist")
        // The trailing newline of a secret file is not part of the secret.
        #expect(result.instances["good"]?.variables["client_secret"]?.revealed == "s3cret")
    }

    /// A sink file every user may read hands the token to callers its `[access]` rule refuses (issue #18, finding 4):
    /// `tokend check` and the reload warn; without `[access]`, or with a mode others cannot read, they do not.
    @Test(arguments: [
        ("0644", true, true), ("0604", true, true), ("0640", true, false), ("0600", true, false), ("0644", false, false),
    ])
    func aSinkOthersMayReadWarnsWhenTheInstanceHasAnAccessRule(_ mode: String, _ hasAccess: Bool, _ warns: Bool) {
        var text = Self.good + "\n[sink]\npath = \"/run/tokend/sinks/a.token\"\nmode = \"\(mode)\"\n"
        if hasAccess { text += "\n[access]\nusers = [\"1001\"]\n" }
        let input = ConfigLoader.Input(settings: nil, instances: [("a", .success(.init(path: "/c/instances/a.toml", text: text)))])
        let result = ConfigLoader.load(input) { _ in .success(.init("s3cret")) }
        #expect(result.errors.isEmpty, "\(result.errors)")
        #expect(result.instances["a"] != nil)
        let warnings = result.diagnostics.filter { $0.severity == .warning }.map(\.description)
        if warns {
            #expect(
                warnings == [
                    "/c/instances/a.toml:5: warning: sink.mode: \(mode) lets every user read the token file, "
                        + "which bypasses [access]; use 0640 with a group or 0600"
                ]
            )
        } else {
            #expect(warnings.isEmpty, "\(warnings)")
        }
    }

    @Test func brokenSettingsRejectEverything() {
        let input = ConfigLoader.Input(settings: .success(.init(path: "/c/tokend.toml", text: "nonsense = 1\n")), instances: [])
        let result = ConfigLoader.load(input) { _ in .failure(.init("unused")) }
        #expect(result.settings == nil)
        #expect(result.errors.map(\.description) == ["/c/tokend.toml:1: nonsense: unknown key"])
    }

    @Test func pathsFollowFlagThenEnvThenSystemd() {
        let systemd = [
            "CONFIGURATION_DIRECTORY": "/etc/tokend", "STATE_DIRECTORY": "/var/lib/tokend:/other", "RUNTIME_DIRECTORY": "/run/tokend",
        ]
        let fromSystemd = DaemonPaths.resolve(configDirectory: nil, stateDirectory: nil, socket: nil, environment: systemd)
        #expect(fromSystemd.stateDirectory == "/var/lib/tokend")
        #expect(fromSystemd.socketPath == "/run/tokend/tokend.sock")
        var env = systemd
        env["TOKEND_STATE_DIR"] = "/env/state"
        env["TOKEND_SOCKET"] = "/env/sock"
        let fromEnv = DaemonPaths.resolve(configDirectory: "/flag", stateDirectory: nil, socket: nil, environment: env)
        #expect(fromEnv.configDirectory == "/flag")
        #expect(fromEnv.stateDirectory == "/env/state")
        #expect(fromEnv.socketPath == "/env/sock")
        let defaults = DaemonPaths.resolve(configDirectory: nil, stateDirectory: nil, socket: nil, environment: [:])
        #expect(
            defaults
                == DaemonPaths(
                    configDirectory: "/etc/tokend",
                    stateDirectory: "/var/lib/tokend",
                    socketPath: "/run/tokend/tokend.sock",
                    credentialsDirectory: nil
                )
        )
    }
}
