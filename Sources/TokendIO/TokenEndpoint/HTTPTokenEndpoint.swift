import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOSSL
import TokendCore

/// Token requests over HTTP(S) through AsyncHTTPClient: no redirects followed, bounded response size, TLS 1.2 at
/// least with the instance's private CA and client certificate, through the outbound proxy unless `NO_PROXY` says
/// otherwise.
public final class HTTPTokenEndpoint: TokenEndpoint {
    /// Responses larger than this are refused (a token response is a few KiB).
    public static let maxResponseBytes = 1 << 20

    /// Requests that go direct; with a proxy, a second client for those that go through it.
    private let direct: HTTPClient
    private let proxied: HTTPClient?
    private let proxy: ProxySettings?
    private let timeout: TimeAmount
    /// One configuration per distinct TLS material, so that connections to one endpoint are pooled.
    private let tlsConfigurations = NIOLockedValueBox<[TLSMaterial: TLSConfiguration]>([:])

    public init(connectTimeout: Double, requestTimeout: Double, proxy: ProxySettings? = nil) {
        func client(_ proxy: ProxySettings?) -> HTTPClient {
            var configuration = HTTPClient.Configuration(
                redirectConfiguration: .disallow,
                timeout: .init(connect: .milliseconds(Int64(connectTimeout * 1000)), read: nil),
                proxy: proxy.map { .server(host: $0.host, port: $0.port) }
            )
            configuration.decompression = .disabled
            // tokend retries with its own backoff and classifies the failure; the pool must fail fast instead of
            // retrying a refused connection until the request deadline.
            configuration.connectionPool.retryConnectionEstablishment = false
            configuration.httpVersion = .automatic
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.minimumTLSVersion = .tlsv12
            configuration.tlsConfiguration = tls
            return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        }
        self.direct = client(nil)
        self.proxied = proxy.map { client($0) }
        self.proxy = proxy
        self.timeout = .milliseconds(Int64(requestTimeout * 1000))
    }

    public func send(_ request: TokenRequest) async -> Result<TokenEndpointResponse, FetchFailure> {
        let host = request.endpointHost
        var outgoing = HTTPClientRequest(url: request.url)
        outgoing.method = HTTPMethod(rawValue: request.method)
        for header in request.headers {
            outgoing.headers.add(name: header.name, value: header.value)
        }
        if !request.body.isEmpty || request.method == "POST" {
            outgoing.body = .bytes(ByteBuffer(bytes: request.body))
        }
        if !request.tls.isDefault {
            switch tlsConfiguration(request.tls) {
            case .success(let configuration): outgoing.tlsConfiguration = configuration
            case .failure(let problem):
                return .failure(FetchFailure(kind: .permanent, code: "tls_config", message: "\(problem.key): \(problem.message)"))
            }
        }
        let hostName = Self.name(of: host)
        // Only HTTPS goes through the proxy (as HTTPS_PROXY means); http:// is for loopback hosts and goes direct.
        let https = request.url.lowercased().hasPrefix("https://")
        let viaProxy = https && proxy?.applies(to: hostName) == true
        let client = viaProxy ? proxied ?? direct : direct
        do {
            let deadline = NIODeadline.now() + timeout
            let response = try await client.execute(outgoing, deadline: deadline)
            if (300..<400).contains(Int(response.status.code)) {
                // Redirects are never followed: a token request must not carry credentials to another place.
                let location = response.headers.first(name: "Location").map { String($0.prefix(300)) } ?? "(no Location header)"
                return .failure(
                    FetchFailure(
                        kind: .transient,
                        code: "redirect",
                        message:
                            "HTTP \(response.status.code) from \(host): redirect to \(location) not followed (token requests never follow redirects; fix the token URL)"
                    )
                )
            }
            let body = try await Self.collect(response.body, by: deadline, on: client.eventLoopGroup.next())
            return .success(
                TokenEndpointResponse(
                    status: Int(response.status.code),
                    retryAfter: response.headers.first(name: "Retry-After"),
                    body: Array(buffer: body),
                    headers: response.headers.map { TokenRequest.Header($0.name, $0.value) }
                )
            )
        } catch {
            return .failure(Self.classify(error, host: host, https: https, caFile: request.tls.caFile))
        }
    }

    /// The whole body by `deadline`.
    ///
    /// AsyncHTTPClient's deadline covers only the response head: a server that sent the head and then stalls or drips
    /// the body (a `Content-Length` it never fulfils) would otherwise hold the fetch, and with it the instance's single
    /// flight, forever. Cancelling the collection closes the connection.
    ///
    /// The deadline is a NIO scheduled task, cancelled (and gone from the loop's timer heap) when the body is in.
    /// A `Task.sleep` raced against the collection would not be: a cancelled sleep keeps its Dispatch timer armed
    /// until the deadline, so every fetch would leave a timer behind to wake the daemon later.
    static func collect(
        _ body: HTTPClientResponse.Body,
        by deadline: NIODeadline,
        on eventLoop: any EventLoop
    ) async throws -> ByteBuffer {
        let collection = Task { try await body.collect(upTo: maxResponseBytes) }
        let expired = NIOLockedValueBox(false)
        let timer = eventLoop.scheduleTask(deadline: deadline) {
            expired.withLockedValue { $0 = true }
            collection.cancel()
        }
        defer { timer.cancel() }
        do {
            return try await withTaskCancellationHandler {
                try await collection.value
            } onCancel: {
                collection.cancel()
            }
        } catch {
            if expired.withLockedValue({ $0 }) { throw HTTPClientError.deadlineExceeded }
            throw error
        }
    }

    public func shutdown() async {
        try? await direct.shutdown()
        try? await proxied?.shutdown()
    }

    private func tlsConfiguration(_ material: TLSMaterial) -> Result<TLSConfiguration, TLSProblem> {
        if let known = tlsConfigurations.withLockedValue({ $0[material] }) { return .success(known) }
        let made = TLSConfigurations.make(material)
        if case .success(let configuration) = made {
            tlsConfigurations.withLockedValue { $0[material] = configuration }
        }
        return made
    }

    /// The host without its port ("[::1]:8443" → "[::1]"), for NO_PROXY and messages.
    static func name(of host: String) -> String {
        host.hasPrefix("[") ? String(host.prefix { $0 != "]" }) + "]" : String(host.prefix { $0 != ":" })
    }

    /// Maps a transport error to a transient failure with a stable code; never includes the request.
    ///
    /// `https` and `caFile` (the instance's `ca_file`) make the messages say what to look at.
    static func classify(_ error: any Error, host: String, https: Bool = false, caFile: String? = nil) -> FetchFailure {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout, .tlsHandshakeTimeout:
                // A connection set-up that stalls is reported as either: the request's and the connection's
                // connect_timeout timers race, and a later request that times out waiting for a connection inherits
                // the last failed connection's error. Both mean the same and must read the same.
                let stalled = https ? "TCP connect or TLS handshake unanswered" : "TCP connect unanswered"
                return .timeout("no connection to \(host) within connect_timeout (\(stalled))")
            case .deadlineExceeded, .readTimeout, .writeTimeout:
                return .timeout("no answer from \(host) in time")
            default:
                return .network("request to \(host) failed: \(error.shortDescription)")
            }
        }
        if error is NIOTooManyBytesError {
            return FetchFailure(
                kind: .transient,
                code: "invalid_response",
                message: "response from \(host) is larger than \(maxResponseBytes) bytes"
            )
        }
        let text = String(String(describing: error).prefix(300))
        if let error = error as? NIOSSLExtraError, error == .failedToValidateHostname {
            // NIOSSL's own text says "Couldn't find <none>" for an IP address.
            return FetchFailure(
                kind: .transient,
                code: "tls",
                message: "TLS handshake with \(host) failed: its certificate is not for \(name(of: host)) (failedToValidateHostname)"
            )
        }
        if error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError {
            // BoringSSL's reason code ("CERTIFICATE_VERIFY_FAILED") says it all; the rest is a source path.
            let reason = text.range(of: #"OPENSSL_internal:[A-Z0-9_]+"#, options: .regularExpression)
                .map { String(text[$0].dropFirst("OPENSSL_internal:".count)) }
            let message =
                switch reason {
                case "CERTIFICATE_VERIFY_FAILED"? where caFile != nil:
                    "its certificate is not trusted (CERTIFICATE_VERIFY_FAILED; checked against ca_file \(caFile ?? "") and the system CAs)"
                case "CERTIFICATE_VERIFY_FAILED"?:
                    "its certificate is not trusted (CERTIFICATE_VERIFY_FAILED; for a private CA set ca_file)"
                case "WRONG_VERSION_NUMBER"?:
                    "the answer is not TLS (WRONG_VERSION_NUMBER; a plain-HTTP server behind an https:// URL?)"
                case "TLSV1_ALERT_PROTOCOL_VERSION"?, "UNSUPPORTED_PROTOCOL"?:
                    "no TLS version in common (\(reason ?? ""); tokend requires TLS 1.2 or later)"
                case let code?: code
                case nil: text
                }
            return FetchFailure(kind: .transient, code: "tls", message: "TLS handshake with \(host) failed: \(message)")
        }
        return .network("request to \(host) failed: \(text)")
    }
}
