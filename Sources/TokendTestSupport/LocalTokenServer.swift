import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A small OAuth 2.0 token endpoint on 127.0.0.1 for tests and the demo.
///
/// It records every request, issues distinct tokens with a configurable lifetime, can be told to answer otherwise, and
/// can be stopped and started again on the same port.
///
/// It reads requests with ``WireDecoding`` (Foundation and decoders written in this target), never with tokend's own
/// encoding code, so that what it records is what a real provider would understand.
public final class LocalTokenServer: Sendable {
    /// One header line: name and value as they are on the wire.
    public struct Header: Sendable, Hashable {
        public var name: String
        public var value: String

        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// One request as it arrived.
    public struct RecordedRequest: Sendable, Hashable {
        public var method: String
        public var uri: String
        public var headers: [Header]
        public var body: [UInt8]
        public var receivedAt: Date

        public func header(_ name: String) -> String? {
            headers.first { $0.name.lowercased() == name.lowercased() }?.value
        }

        public var bodyText: String { String(decoding: body, as: UTF8.self) }

        /// The query parameters of the URI, decoded by Foundation's `URLComponents` (form `+` is not a space there,
        /// and tokend writes spaces as `%20`).
        public var queryFields: [String: String] {
            let items = URLComponents(string: uri)?.queryItems ?? []
            return Dictionary(items.map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { first, _ in first })
        }

        /// The form fields of the body, decoded (``WireDecoding/formDictionary(_:)``).
        public var formFields: [String: String] {
            WireDecoding.formDictionary(bodyText)
        }

        /// The client id and secret, from `Authorization: Basic` (RFC 6749 §2.3.1 decoding) or the body.
        public var clientCredentials: (id: String, secret: String)? {
            if let authorization = header("authorization"), let pair = WireDecoding.basicCredentials(authorization) {
                return pair
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
        /// Issue a new token whose `expires_in` is this raw JSON value (`"6"`, `"\"6\""`, `"1e300"`, `"-5"`), or
        /// absent when nil; with `jwtExpiresIn` the token is an (unsigned) JWT whose `exp` lies that many seconds
        /// ahead. The token's true expiry (see ``trueExpiry(of:)``) is the earlier of the two that are valid.
        case issueToken(expiresIn: String?, jwtExpiresIn: Int? = nil)
        /// Answer with this status, headers and body.
        case respond(status: Int, headers: [Header], body: String)
        /// 429 with `Retry-After` as an HTTP-date this many seconds ahead of the moment of the answer.
        case tooManyRequests(retryAfterDateIn: Int)
        /// Send the head (with the full `Content-Length`) and half of this body, then close the connection.
        case dropMidBody(body: String)
        /// Send the head with a `Content-Length` larger than this body, then the body, and keep the connection
        /// open: the rest never comes.
        case partialBody(body: String, declaredLength: Int)
        /// Never answer (the connection stays open until the client gives up or the server stops).
        case hang
        /// Echo the request's body and Authorization header back in an error, as careless providers do: as the
        /// `error_description` of an OAuth error when `oauth`, else as a plain-text body; after `padding` filler
        /// characters, so that a secret can be made to straddle where tokend clips messages.
        case echoRequest(status: Int, oauth: Bool, padding: Int)
        /// Issue a new token as a `text/plain` body (and a trailing newline): an unsigned JWT whose `exp` lies this
        /// many seconds ahead, or an opaque token when nil.
        case issuePlainText(jwtExpiresIn: Int?)
        /// Issue a new token in JSON at these dotted paths (`data.jwt`, `data.ttl`), with this `token_type` at
        /// `tokenTypePath`.
        case issueAt(tokenPath: String, expiresInPath: String, tokenTypePath: String, tokenType: String, lifetime: Int)
    }

    /// How one answer goes on the wire.
    fileprivate enum Delivery: Sendable {
        case complete
        case dropMidBody
        case partial(declaredLength: Int)
    }

    fileprivate struct Answer: Sendable {
        var status: Int
        var headers: [Header]
        var body: String
        var delivery: Delivery = .complete
    }

    private struct State {
        var requests: [RecordedRequest] = []
        var issued: [String] = []
        var trueExpiry: [String: Date] = [:]
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
        var stallsHandshakes = false
        var connectedAt: [Date] = []
        var documents: [String: String] = [:]
        var assertionCheck: (@Sendable (String) -> String?)?
        var grantAssertionCheck: (@Sendable (String) -> String?)?
        var exchangeCheck: (@Sendable (String) -> String?)?
        var requiredGET: [String: String]?
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

    /// Requires what a metadata endpoint (Azure IMDS) requires: a GET, no body, these query parameters and headers;
    /// otherwise 400 `invalid_request` saying what was wrong.
    public func requireGET(query: [String: String], headers: [String: String] = [:]) {
        state.withLockedValue { $0.requiredGET = query.merging(headers.map { ("header:" + $0.key.lowercased(), $0.value) }) { $1 } }
    }

    /// Requires a client assertion (RFC 7523): `check` gets the JWT and returns why it is refused, or nil to accept.
    ///
    /// A refused or missing assertion gets 401 `invalid_client`.
    public func requireClientAssertion(_ check: @escaping @Sendable (String) -> String?) {
        state.withLockedValue { $0.assertionCheck = check }
    }

    /// Requires the RFC 7523 §2.1 JWT-bearer grant: `grant_type` urn:ietf:params:oauth:grant-type:jwt-bearer and an
    /// `assertion` that `check` accepts (nil) or refuses (why); a refused or missing one gets 400 `invalid_grant`.
    public func requireJWTBearerGrant(_ check: @escaping @Sendable (String) -> String?) {
        state.withLockedValue { $0.grantAssertionCheck = check }
    }

    /// Checks every RFC 8693 token-exchange request (`grant_type` urn:ietf:params:oauth:grant-type:token-exchange).
    ///
    /// `check` gets the `subject_token` and returns why it is refused, or nil to accept. A refused one, or one without
    /// `subject_token` or `subject_token_type`, gets 400 `invalid_request` (RFC 8693 §2.2.2).
    public func requireTokenExchange(_ check: @escaping @Sendable (String) -> String?) {
        state.withLockedValue { $0.exchangeCheck = check }
    }

    /// Serves HTTPS from now on: this certificate and key, and, with `clientCA`, a client certificate signed by it is
    /// required (RFC 8705 mTLS).
    ///
    /// `maximumVersion` caps the protocol, to show that clients refuse old ones. Call it before ``start(port:)``, or
    /// while running to swap the certificate: connections accepted from then on get the new one (``closeConnections()``
    /// ends the kept-alive ones, so that the client must shake hands again).
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

    /// Serves plain HTTP to connections accepted from now on, also to a client that expects TLS (``tokenURL`` then
    /// says `http://`).
    public func usePlainHTTP() {
        state.withLockedValue { $0.tls = nil }
    }

    /// While `stall`, connections accepted are read and never answered, not even a TLS handshake or an HTTP error: a
    /// client's ClientHello gets no reply.
    ///
    /// They stay open until the client gives up or the server stops.
    public func stallHandshakes(_ stall: Bool) {
        state.withLockedValue { $0.stallsHandshakes = stall }
    }

    /// When each connection was accepted, in order (a TLS failure never reaches ``requests``; it is counted here).
    public var connectionTimes: [Date] { state.withLockedValue { $0.connectedAt } }

    public var requests: [RecordedRequest] { state.withLockedValue { $0.requests } }

    /// The most requests this server was answering at once (with a ``setResponseDelay(_:)`` they overlap).
    public var peakConcurrentRequests: Int { state.withLockedValue { $0.peakInProgress } }

    /// Delays every answer, so that concurrent requests overlap as they would at a real provider.
    public func setResponseDelay(milliseconds: Int64) {
        state.withLockedValue { $0.responseDelay = .milliseconds(milliseconds) }
    }
    public var requestCount: Int { state.withLockedValue { $0.requests.count } }
    public var issuedTokens: [String] { state.withLockedValue { $0.issued } }

    /// When a token this server issued really expires (for a token issued with an invalid lifetime, the moment
    /// it was issued: it must never be served); nil for a token this server never issued.
    public func trueExpiry(of token: String) -> Date? {
        state.withLockedValue { $0.trueExpiry[token] }
    }

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
                let (tls, stall) = state.withLockedValue { state in
                    state.connections[id] = channel
                    state.connectedAt.append(Date())
                    return (state.tls, state.stallsHandshakes)
                }
                channel.closeFuture.whenComplete { [state] _ in
                    _ = state.withLockedValue { $0.connections.removeValue(forKey: id) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    // No handler at all: what the client sends is read and dropped, nothing is ever answered.
                    if stall { return }
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
        let listener = state.withLockedValue { state in
            defer { state.channel = nil }
            return state.channel
        }
        try? await listener?.close()
        await closeConnections()
    }

    /// Closes every open connection (kept-alive ones too); the listener stays, so the next request connects anew.
    public func closeConnections() async {
        let connections = state.withLockedValue { state in
            defer { state.connections = [:] }
            return Array(state.connections.values)
        }
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

    fileprivate func answer(_ request: RecordedRequest) -> Answer? {
        let path = String(request.uri.prefix { $0 != "?" })
        if request.method == "GET", path.contains("/.well-known/") {
            let document = state.withLockedValue { state in
                state.requests.append(request)
                return state.documents[path]
            }
            return document.map { Answer(status: 200, headers: [], body: $0) }
                ?? Answer(status: 404, headers: [], body: #"{"error":"not_found"}"#)
        }
        let (behavior, expected, number, assertionCheck, requiredGET) = state.withLockedValue { state in
            state.requests.append(request)
            let behavior = state.script.isEmpty ? state.fallback : state.script.removeFirst()
            return (behavior, state.expectedClients, state.requests.count, state.assertionCheck, state.requiredGET)
        }
        if let requiredGET, let refusal = Self.refusal(of: request, requiring: requiredGET) {
            return Answer(status: 400, headers: [], body: #"{"error":"invalid_request","error_description":"\#(refusal)"}"#)
        }
        let grantCheck = state.withLockedValue { $0.grantAssertionCheck }
        let checks:
            [(check: (@Sendable (String) -> String?)?, kind: (field: String, value: String), jwtField: String, status: Int, error: String)] =
                [
                    (grantCheck, ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), "assertion", 400, "invalid_grant"),
                    (
                        assertionCheck, ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                        "client_assertion", 401, "invalid_client"
                    ),
                ]
        for entry in checks {
            guard let check = entry.check else { continue }
            let fields = request.formFields
            let refusal: String? =
                if fields[entry.kind.field] != entry.kind.value {
                    "\(entry.kind.field) missing or wrong"
                } else if let jwt = fields[entry.jwtField] {
                    check(jwt)
                } else {
                    "\(entry.jwtField) missing"
                }
            if let refusal {
                return Answer(status: entry.status, headers: [], body: #"{"error":"\#(entry.error)","error_description":"\#(refusal)"}"#)
            }
        }
        if let exchangeCheck = state.withLockedValue({ $0.exchangeCheck }),
            request.formFields["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
        {
            let fields = request.formFields
            let refusal: String? =
                if let subject = fields["subject_token"], fields["subject_token_type"] != nil {
                    exchangeCheck(subject)
                } else {
                    "subject_token or subject_token_type missing"
                }
            if let refusal {
                return Answer(status: 400, headers: [], body: #"{"error":"invalid_request","error_description":"\#(refusal)"}"#)
            }
        }
        if !expected.isEmpty {
            let presented = request.clientCredentials
            if presented.map({ expected[$0.id] != $0.secret }) ?? true {
                return Answer(
                    status: 401,
                    headers: [],
                    body: #"{"error":"invalid_client","error_description":"client authentication failed"}"#
                )
            }
        }
        switch behavior {
        case .hang:
            return nil
        case .respond(let status, let headers, let body):
            return Answer(status: status, headers: headers, body: body)
        case .tooManyRequests(let seconds):
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
            let date = formatter.string(from: Date().addingTimeInterval(Double(seconds)))
            return Answer(status: 429, headers: [.init("Retry-After", date)], body: #"{"error":"slow_down"}"#)
        case .echoRequest(let status, let oauth, let padding):
            let echoed = String(repeating: "x", count: padding) + request.bodyText + " " + (request.header("authorization") ?? "")
            guard oauth else { return Answer(status: status, headers: [.init("Content-Type", "text/plain")], body: echoed) }
            let escaped = echoed.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            return Answer(status: status, headers: [], body: #"{"error":"invalid_request","error_description":"\#(escaped)"}"#)
        case .dropMidBody(let body):
            return Answer(status: 200, headers: [], body: body, delivery: .dropMidBody)
        case .partialBody(let body, let declaredLength):
            return Answer(status: 200, headers: [], body: body, delivery: .partial(declaredLength: declaredLength))
        case .issue(let lifetime):
            let token = issue(number: number, expiresIn: String(lifetime), jwtExpiresIn: nil)
            onIssue?(token, lifetime)
            let body = #"{"access_token":"\#(token)","token_type":"Bearer","expires_in":\#(lifetime)}"#
            return Answer(status: 200, headers: [], body: body)
        case .issuePlainText(let jwtExpiresIn):
            let token = issue(number: number, expiresIn: nil, jwtExpiresIn: jwtExpiresIn)
            return Answer(status: 200, headers: [.init("Content-Type", "text/plain; charset=utf-8")], body: token + "\n")
        case .issueAt(let tokenPath, let expiresInPath, let tokenTypePath, let tokenType, let lifetime):
            let token = issue(number: number, expiresIn: String(lifetime), jwtExpiresIn: nil)
            var object: [String: Any] = [:]
            let fields: [(String, Any)] = [(tokenPath, token), (expiresInPath, lifetime), (tokenTypePath, tokenType)]
            for (path, value) in fields {
                Self.set(value, at: path.split(separator: ".").map(String.init), in: &object)
            }
            let body = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])).map {
                String(decoding: $0, as: UTF8.self)
            }
            return Answer(status: 200, headers: [], body: body ?? "{}")
        case .issueToken(let expiresIn, let jwtExpiresIn):
            let token = issue(number: number, expiresIn: expiresIn, jwtExpiresIn: jwtExpiresIn)
            let lifetime = expiresIn.map { #","expires_in":\#($0)"# } ?? ""
            return Answer(status: 200, headers: [], body: #"{"access_token":"\#(token)","token_type":"Bearer"\#(lifetime)}"#)
        }
    }

    /// Why `request` is not the GET a metadata endpoint wants (``requireGET(query:headers:)``), or nil.
    static func refusal(of request: RecordedRequest, requiring required: [String: String]) -> String? {
        guard request.method == "GET" else { return "expected GET, got \(request.method)" }
        guard request.body.isEmpty else { return "a GET with a \(request.body.count)-byte body" }
        let query = request.queryFields
        for (name, value) in required.sorted(by: { $0.key < $1.key }) {
            if name.hasPrefix("header:") {
                let header = String(name.dropFirst("header:".count))
                if request.header(header) != value { return "header \(header) is not \(value)" }
            } else if query[name] != value {
                return "query parameter \(name) is not \(value)"
            }
        }
        return nil
    }

    /// Sets `value` at a path of keys, making the objects on the way.
    static func set(_ value: Any, at path: [String], in object: inout [String: Any]) {
        guard let first = path.first else { return }
        if path.count == 1 {
            object[first] = value
            return
        }
        var inner = object[first] as? [String: Any] ?? [:]
        set(value, at: Array(path.dropFirst()), in: &inner)
        object[first] = inner
    }

    /// Makes a distinct token and records it with its true expiry.
    private func issue(number: Int, expiresIn: String?, jwtExpiresIn: Int?) -> String {
        let now = Date()
        let id = "tok-\(number)-\(String(UInt64.random(in: 0...UInt64.max), radix: 36))"
        var token = id
        var expiries: [Date] = []
        if let seconds = expiresIn.flatMap(Self.lifetime(fromJSON:)) { expiries.append(now.addingTimeInterval(seconds)) }
        if let jwtExpiresIn {
            let exp = Int(now.timeIntervalSince1970) + jwtExpiresIn
            token = Self.unsignedJWT(#"{"sub":"\#(id)","exp":\#(exp)}"#)
            expiries.append(Date(timeIntervalSince1970: Double(exp)))
        }
        let expiry = expiries.min() ?? now
        state.withLockedValue {
            $0.issued.append(token)
            $0.trueExpiry[token] = expiry
        }
        return token
    }

    /// A positive, finite number of seconds in a raw JSON value (a number or a numeric string).
    static func lifetime(fromJSON raw: String) -> Double? {
        var text = raw.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("\""), text.hasSuffix("\""), text.count >= 2 { text = String(text.dropFirst().dropLast()) }
        guard let seconds = Double(text), seconds.isFinite, seconds > 0 else { return nil }
        return min(seconds, Date.distantFuture.timeIntervalSinceNow)
    }

    /// A JWS compact serialization with `alg: none` and this payload (tokend reads `exp`, never verifies).
    public static func unsignedJWT(_ payload: String) -> String {
        func base64URL(_ text: String) -> String {
            Data(text.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        }
        return base64URL(#"{"alg":"none","typ":"JWT"}"#) + "." + base64URL(payload) + ".sig"
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
                    headers: requestHead.headers.map { Header($0.name, $0.value) },
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

        func respond(_ answer: Answer, version: HTTPVersion, context: ChannelHandlerContext) {
            guard context.channel.isActive else { return }
            let body = Array(answer.body.utf8)
            var declared = body.count
            var sent = body[...]
            if case .dropMidBody = answer.delivery { sent = body.prefix(body.count / 2) }
            if case .partial(let length) = answer.delivery { declared = length }
            var headers = HTTPHeaders()
            if !answer.headers.contains(where: { $0.name.lowercased() == "content-type" }) {
                headers.add(name: "Content-Type", value: "application/json")
            }
            headers.add(name: "Content-Length", value: String(declared))
            for header in answer.headers { headers.add(name: header.name, value: header.value) }
            let responseHead = HTTPResponseHead(
                version: version,
                status: HTTPResponseStatus(statusCode: answer.status),
                headers: headers
            )
            context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
            switch answer.delivery {
            case .complete:
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: sent)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            case .dropMidBody:
                context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: sent)))), promise: nil)
                context.close(promise: nil)
            case .partial:
                // The promised rest never comes; the connection stays open.
                context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: sent)))), promise: nil)
            }
        }
    }
}
