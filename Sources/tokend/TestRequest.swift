import ArgumentParser
import Foundation
import TokendCore
import TokendIO

/// `tokend test NAME`: one real token request for an instance as configured, shown with its secrets redacted.
struct TestRequest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Make one real token request for an instance and show it, secrets redacted.",
        discussion: """
            Reads the config directory like `check`, sends the instance's token request once (no daemon involved, \
            nothing cached or written) and prints the request (every secret as <secret:NAME>), the response (the \
            token as <token:FINGERPRINT>), the parsed token type, scope and expiry, and what the daemon would serve.

            Exit status: 0 a usable token, 1 no usable token (the reason is printed) or a config error.

            Examples:
              tokend test acme-prod --config-dir /etc/tokend
            """
    )

    @OptionGroup var paths: PathOptions

    @Argument(help: "The instance name.")
    var name: String

    func run() throws {
        let resolvedPaths = paths.resolved
        let directory = ConfigDirectory(path: resolvedPaths.configDirectory, credentialsDirectory: resolvedPaths.credentialsDirectory)
        let loaded: ConfigLoader.Loaded
        do {
            loaded = try directory.load()
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        guard let instance = loaded.instances[name] else {
            for diagnostic in loaded.errors where diagnostic.file.hasSuffix("/\(name).toml") { printError(diagnostic.description) }
            printError("tokend: no valid instance named '\(name)'")
            throw ExitCode(1)
        }
        if let input = instance.definition.instanceInputs.first {
            // The input's token exists only in the running daemon: a request made here would carry a stand-in.
            printError(
                "tokend: '\(name)' takes the token of instance '\(input.instance)' (variable \(input.variable)); "
                    + "tokend test runs one instance alone: test '\(input.instance)', then run the chain in the daemon"
            )
            throw ExitCode(1)
        }
        let settings = loaded.settings ?? DaemonSettings()
        let now = Date()
        let sent: TokenRequest
        switch instance.renderRequest() {
        case .success(let rendered):
            switch rendered.signingAssertion(now: now, jti: UUID().uuidString) {
            case .success(let signed): sent = signed
            case .failure(let problem):
                printError("tokend: cannot sign the client assertion: \(problem)")
                throw ExitCode(1)
            }
        case .failure(let diagnostic):
            printError(diagnostic.description)
            throw ExitCode(1)
        }
        print("--- request")
        print(TokenTestReport.request(instance, sent: sent))
        let (proxy, _) = ProxySettings.resolve(
            setting: settings.proxy,
            noProxySetting: settings.noProxy,
            environment: ProcessInfo.processInfo.environment
        )
        let endpoint = HTTPTokenEndpoint(connectTimeout: settings.connectTimeout, requestTimeout: settings.requestTimeout, proxy: proxy)
        let result = blocking {
            let result = await endpoint.send(sent)
            await endpoint.shutdown()
            return result
        }
        let secrets = TokenTestReport.sensitive(instance, sent: sent)
        let response: TokenEndpointResponse
        switch result {
        case .success(let answered): response = answered
        case .failure(let failure):
            print("--- no response")
            printError("tokend: no usable token: \(failure.redacting(secrets.map(\.value)).message)")
            throw ExitCode(1)
        }
        let parsed = TokenResponseParser.parse(
            status: response.status,
            body: response.body,
            retryAfter: response.retryAfter,
            shape: .init(instance.definition.connector),
            requestedScope: instance.variable("scope")?.revealed,
            secrets: secrets.map(\.value),
            contentType: response.contentType,
            now: Date()
        )
        let token = try? parsed.get()
        print("")
        print("--- response")
        print(
            TokenTestReport.response(
                status: response.status,
                headers: response.headers,
                body: response.body,
                token: token?.accessToken,
                secrets: secrets
            )
        )
        print("")
        switch parsed {
        case .success(let token):
            print("--- usable token")
            print(TokenTestReport.served(token, application: instance.application, now: Date()))
        case .failure(let failure):
            print("--- no usable token")
            printError("tokend: no usable token: \(failure.code): \(failure.redacting(secrets.map(\.value)).message)")
            throw ExitCode(1)
        }
    }

    /// Runs `body` in a task and waits for it on this (non-async) thread.
    private func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task {
            box.value = await body()
            done.signal()
        }
        done.wait()
        guard let value = box.value else { preconditionFailure("the task signalled without a value") }
        return value
    }
}

/// A value handed from a task to the thread that waits for it: the semaphore orders the write before the read.
private final class ResultBox<T: Sendable>: @unchecked Sendable {
    var value: T?
}
