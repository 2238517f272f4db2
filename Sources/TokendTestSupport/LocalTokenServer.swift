import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import TokendCore

/// A small OAuth 2.0 token endpoint on 127.0.0.1 for tests and the demo. It records every request, issues
/// distinct tokens with a configurable lifetime, can be told to answer otherwise, and can be stopped and
/// started again on the same port.
public final class LocalTokenServer: Sendable {
    /// One request as it arrived.
    public struct RecordedRequest: Sendable, Hashable {
        public var method: String
        public var uri: String
        public var headers: [TokenRequest.Header]
        public var body: [UInt8]
        public var receivedAt: Date

        public func header(_ name: String) -> String? {
            headers.first { $0.name.lowercased() == name.lowercased() }?.value
        }

        public var bodyText: String { String(decoding: body, as: UTF8.self) }

        /// The form fields of the body, decoded.
        public var formFields: [String: String] {
            var fields: [String: String] = [:]
            for field in FormURLEncoding.decodeFields(bodyText[...]) { fields[field.name] = field.value }
            return fields
        }

        /// The client id and secret, from `Authorization: Basic` (RFC 6749 §2.3.1 decoding) or the body.
        public var clientCredentials: (id: String, secret: String)? {
            if let authorization = header("authorization"), authorization.hasPrefix("Basic "),
                let data = Data(base64Encoded: String(authorization.dropFirst(6))),
                let pair = String(data: data, encoding: .utf8), let colon = pair.firstIndex(of: ":"),
                let id = FormURLEncoding.decode(pair[..<colon]),
                let secret = FormURLEncoding.decode(pair[pair.index(after: colon)...])
            {
                return (id, secret)
            }
            let fields = formFields
            if let id = fields["client_id"], let secret = fields["client_secret"] { return (id, secret) }
            return nil
        }
    }

    /// How to answer the next request.
    public enum Behavior: Sendable, Hashable {
        /// Issue a new token with this lifetime (seconds).
        case issue(lifetime: Int)
        /// Answer with this status, headers and body.
        case respond(status: Int, headers: [TokenRequest.Header], body: String)
        /// Never answer (the connection stays open until the client gives up or the server stops).
        case hang
    }

    private struct State {
        var requests: [RecordedRequest] = []
        var issued: [String] = []
        var script: [Behavior] = []
        var fallback: Behavior
        var expectedClients: [String: String] = [:]
        var channel: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
        var port = 0
        var responseDelay: TimeAmount = .zero
        var inProgress = 0
        var peakInProgress = 0
        var tls: NIOSSLContext?
        var documents: [String: String] = [:]
        var assertionCheck: (@Sendable (String) -> String?)?
    }

    private let state: NIOLockedValueBox<State>
    private let onIssue: (@Sendable (String, Int) -> Void)?

    public init(lifetime: Int = 3600, onIssue: (@Sendable (_ token: String, _ lifetime: Int) -> Void)? = nil) {
        self.state = NIOLockedValueBox(State(fallback: .issue(lifetime: lifetime)))
        self.onIssue = onIssue
    }

    /// The bound port (0 before the first start).
    public var port: Int { state.withLockedValue { $0.port } }

    /// `http://127.0.0.1:<port>/token`, or `https://…` when started with TLS.
    public var tokenURL: String { baseURL + "/token" }

    /// `http(s)://127.0.0.1:<port>`.
    public var baseURL: String {
        state.withLockedValue { "\($0.tls == nil ? "http" : "https")://127.0.0.1:\($0.port)" }
    }

    /// Serves `json` with 200 to a GET of `path` (a discovery document, say), whatever the script says; other GETs
    /// under `/.well-known/` get 404.
    public func serveDocument(path: String, json: String) {
        state.withLockedValue { $0.documents[path] = json }
    }

    /// Requires a client assertion (RFC 7523): `check` gets the JWT and returns why it is refused, or nil to accept.
    /// A refused or missing assertion gets 401 `invalid_client`.
    public func requireClientAssertion(_ check: @escaping @Sendable (String) -> String?) {
        state.withLockedValue { $0.assertionCheck = check }
    }

    /// Serves HTTPS from now on (call before ``start(port:)``): this certificate and key, and, with `clientCA`, a
    /// client certificate signed by it is required (RFC 8705 mTLS).
    /// `maximumVersion` caps the protocol, to show that clients refuse old ones.
    public func useTLS(certificatePath: String, keyPath: String, clientCAPath: String? = nil, maximumVersion: TLSVersion? = nil) throws {
        let chain = try NIOSSLCertificate.fromPEMFile(certificatePath).map { NIOSSLCertificateSource.certificate($0) }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain,
            privateKey: .privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem))
        )
        configuration.minimumTLSVersion = maximumVersion == nil ? .tlsv12 : .tlsv1
        configuration.maximumTLSVersion = maximumVersion
        if let clientCAPath {
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCAPath))
            configuration.certificateVerification = .noHostnameVerification
        }
        let context = try NIOSSLContext(configuration: configuration)
        state.withLockedValue { $0.tls = context }
    }

    public var requests: [RecordedRequest] { state.withLockedValue { $0.requests } }

    /// The most requests this server was answering at once (with a ``setResponseDelay(_:)`` they overlap).
    public var peakConcurrentRequests: Int { state.withLockedValue { $0.peakInProgress } }

    /// Delays every answer, so that concurrent requests overlap as they would at a real provider.
    public func setResponseDelay(milliseconds: Int64) {
        state.withLockedValue { $0.responseDelay = .milliseconds(milliseconds) }
    }
    public var requestCount: Int { state.withLockedValue { $0.requests.count } }
    public var issuedTokens: [String] { state.withLockedValue { $0.issued } }

    /// Answers every request not covered by a script this way.
    public func setBehavior(_ behavior: Behavior) {
        state.withLockedValue { $0.fallback = behavior }
    }

    /// Answers the next requests in this order, then falls back.
    public func script(_ behaviors: [Behavior]) {
        state.withLockedValue { $0.script += behaviors }
    }

    /// Accepts this client; once any client is registered, unknown ids or wrong secrets get 401 `invalid_client`.
    public func expectClient(id: String, secret: String) {
        state.withLockedValue { $0.expectedClients[id] = secret }
    }

    /// Binds 127.0.0.1 (on the previous port when restarting, or on `port`; 0 picks a free one).
    public func start(port requested: Int? = nil) async throws {
        let port = requested ?? state.withLockedValue { $0.port }
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                let id = ObjectIdentifier(channel)
                let tls = state.withLockedValue { $0.tls }
                state.withLockedValue { $0.connections[id] = channel }
                channel.closeFuture.whenComplete { [state] _ in
                    _ = state.withLockedValue { $0.connections.removeValue(forKey: id) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(server: self))
                }
            }
        let channel = try await bootstrap.bind(host: "127.0.0.1", port: port).get()
        state.withLockedValue {
            $0.channel = channel
            $0.port = channel.localAddress?.port ?? port
        }
    }

    /// Closes the listening socket and every open connection; new connections then get "connection refused".
    public func stop() async {
        let (listener, connections) = state.withLockedValue { state -> ((any Channel)?, [any Channel]) in
            defer {
                state.channel = nil
                state.connections = [:]
            }
            return (state.channel, Array(state.connections.values))
        }
        try? await listener?.close()
        for connection in connections {
            try? await connection.close()
        }
    }

    fileprivate func begin() -> TimeAmount {
        state.withLockedValue { state in
            state.inProgress += 1
            state.peakInProgress = max(state.peakInProgress, state.inProgress)
            return state.responseDelay
        }
    }

    fileprivate func end() {
        state.withLockedValue { $0.inProgress -= 1 }
    }

    fileprivate func answer(_ request: RecordedRequest) -> (status: Int, headers: [TokenRequest.Header], body: String)? {
        let path = String(request.uri.prefix { $0 != "?" })
        if request.method == "GET", path.contains("/.well-known/") {
            let document = state.withLockedValue { state in
                state.requests.append(request)
                return state.documents[path]
            }
            return document.map { (200, [], $0) } ?? (404, [], #"{"error":"not_found"}"#)
        }
        let (behavior, expected, number, assertionCheck) = state.withLockedValue { state in
            state.requests.append(request)
            let behavior = state.script.isEmpty ? state.fallback : state.script.removeFirst()
            return (behavior, state.expectedClients, state.requests.count, state.assertionCheck)
        }
        if let assertionCheck {
            let fields = request.formFields
            let refusal: String? =
                if fields["client_assertion_type"] != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
                    "client_assertion_type missing or wrong"
                } else if let jwt = fields["client_assertion"] {
                    assertionCheck(jwt)
                } else {
                    "client_assertion missing"
                }
            if let refusal {
                return (401, [], #"{"error":"invalid_client","error_description":"\#(refusal)"}"#)
            }
        }
        if !expected.isEmpty {
            let presented = request.clientCredentials
            if presented.map({ expected[$0.id] != $0.secret }) ?? true {
                return (401, [], #"{"error":"invalid_client","error_description":"client authentication failed"}"#)
            }
        }
        switch behavior {
        case .hang:
            return nil
        case .respond(let status, let headers, let body):
            return (status, headers, body)
        case .issue(let lifetime):
            let token = "tok-\(number)-\(String(UInt64.random(in: 0...UInt64.max), radix: 36))"
            state.withLockedValue { $0.issued.append(token) }
            onIssue?(token, lifetime)
            let body = #"{"access_token":"\#(token)","token_type":"Bearer","expires_in":\#(lifetime)}"#
            return (200, [], body)
        }
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let server: LocalTokenServer
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(server: LocalTokenServer) {
            self.server = server
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let requestHead):
                head = requestHead
                body = []
            case .body(var buffer):
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            case .end:
                guard let requestHead = head else { return }
                let recorded = RecordedRequest(
                    method: requestHead.method.rawValue,
                    uri: requestHead.uri,
                    headers: requestHead.headers.map { TokenRequest.Header($0.name, $0.value) },
                    body: body,
                    receivedAt: Date()
                )
                let delay = server.begin()
                guard let answer = server.answer(recorded) else {
                    server.end()
                    return
                }
                let loop = context.eventLoop
                let bound = NIOLoopBound((handler: self, context: context), eventLoop: loop)
                let version = requestHead.version
                let server = self.server
                if delay == .zero {
                    server.end()
                    respond(answer, version: version, context: context)
                } else {
                    loop.scheduleTask(in: delay) {
                        server.end()
                        bound.value.handler.respond(answer, version: version, context: bound.value.context)
                    }
                }
            }
        }

        func respond(
            _ answer: (status: Int, headers: [TokenRequest.Header], body: String),
            version: HTTPVersion,
            context: ChannelHandlerContext
        ) {
            guard context.channel.isActive else { return }
            do {
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: "application/json")
                headers.add(name: "Content-Length", value: String(answer.body.utf8.count))
                for header in answer.headers { headers.add(name: header.name, value: header.value) }
                let responseHead = HTTPResponseHead(
                    version: version,
                    status: HTTPResponseStatus(statusCode: answer.status),
                    headers: headers
                )
                context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: answer.body)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
