import Dispatch
import NIOConcurrencyHelpers
import TokendCore

/// Fetches authorization-server metadata while a config directory loads: `<issuer>/.well-known/openid-configuration`,
/// then RFC 8414's `/.well-known/oauth-authorization-server`.
///
/// One fetch per issuer and TLS material per load; the HTTP client is made on first use and closed by ``close()``.
///
/// Its calls block: it is used by the config loader, which runs on the main thread at start-up, on the daemon's
/// I/O queue for a reload, and in `tokend check` — never on an event loop or in a task.
final class DiscoveryFetcher: Sendable {
    private struct Key: Hashable {
        var issuer: String
        var tls: TLSMaterial
    }

    private struct State {
        var endpoint: HTTPTokenEndpoint?
        var documents: [Key: Result<DiscoveryDocument, DiscoveryError>] = [:]
    }

    private let environment: [String: String]
    private let state = NIOLockedValueBox(State())

    init(environment: [String: String]) {
        self.environment = environment
    }

    /// The loader's ``ConfigLoader/Discoverer``.
    var discoverer: ConfigLoader.Discoverer {
        { [self] issuer, tls, settings in fetch(issuer: issuer, tls: tls, settings: settings) }
    }

    func fetch(issuer: String, tls: TLSMaterial, settings: DaemonSettings) -> Result<DiscoveryDocument, DiscoveryError> {
        let key = Key(issuer: issuer, tls: tls)
        if let known = state.withLockedValue({ $0.documents[key] }) { return known }
        let endpoint = state.withLockedValue { state in
            if let endpoint = state.endpoint { return endpoint }
            let proxy = ProxySettings.resolve(setting: settings.proxy, noProxySetting: settings.noProxy, environment: environment).proxy
            let made = HTTPTokenEndpoint(connectTimeout: settings.connectTimeout, requestTimeout: settings.requestTimeout, proxy: proxy)
            state.endpoint = made
            return made
        }
        var reasons: [String] = []
        var found: Result<DiscoveryDocument, DiscoveryError>?
        for url in DiscoveryDocument.wellKnownURLs(issuer: issuer) {
            var get = TokenRequest(method: "GET", url: url, headers: [.init("Accept", "application/json")], body: [])
            get.tls = tls
            let request = get
            let response = Self.blocking { await endpoint.send(request) }
            switch response {
            case .success(let answer) where answer.status == 200:
                switch DiscoveryDocument.parse(answer.body) {
                case .success(let document): found = .success(document)
                case .failure(let reason): reasons.append("GET \(url): \(reason.message)")
                }
            case .success(let answer):
                reasons.append("GET \(url): HTTP \(answer.status)")
            case .failure(let failure):
                reasons.append("GET \(url): \(failure.message)")
            }
            if found != nil { break }
        }
        let result = found ?? .failure(DiscoveryError(reasons.joined(separator: "; ")))
        state.withLockedValue { $0.documents[key] = result }
        return result
    }

    /// Closes the HTTP client, if one was made.
    func close() {
        guard let endpoint = state.withLockedValue({ $0.endpoint }) else { return }
        Self.blocking { await endpoint.shutdown() }
    }

    /// Runs `body` in a task and waits for it on the calling (non-async) thread.
    private static func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
        let result = NIOLockedValueBox<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let value = await body()
            result.withLockedValue { $0 = value }
            done.signal()
        }
        done.wait()
        guard let value = result.withLockedValue({ $0 }) else { preconditionFailure("blocking: the task signalled without a value") }
        return value
    }
}
