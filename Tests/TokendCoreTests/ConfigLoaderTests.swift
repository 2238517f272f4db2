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
