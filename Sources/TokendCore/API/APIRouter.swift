import Foundation

/// One request to the socket API, reduced to what the router looks at.
public struct APIRequest: Sendable, Hashable {
    public var method: String
    /// The path without the query (`/v1/tokens/acme`).
    public var path: String
    public var query: [String: String]
    public var accept: String?
    public var body: [UInt8]
    /// The caller, when the socket could tell; nil means no per-caller checks (the socket's mode decides).
    public var peer: PeerCredentials?

    public init(
        method: String,
        path: String,
        query: [String: String] = [:],
        accept: String? = nil,
        body: [UInt8] = [],
        peer: PeerCredentials? = nil
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.accept = accept
        self.body = body
        self.peer = peer
    }

    /// Splits a request target (`/v1/tokens/a?format=raw`) into path and decoded query.
    public init(method: String, target: String, accept: String? = nil, body: [UInt8] = [], peer: PeerCredentials? = nil) {
        // Most targets have no query: then the path is the target itself (no copy, no split).
        var text = target  // withUTF8 reads a native string's bytes in place
        guard text.withUTF8({ $0.contains(UInt8(ascii: "?")) }), let mark = target.utf8.firstIndex(of: UInt8(ascii: "?")) else {
            self.init(method: method, path: target, accept: accept, body: body, peer: peer)
            return
        }
        var query: [String: String] = [:]
        for field in FormURLEncoding.decodeFields(target[target.index(after: mark)...]) where query[field.name] == nil {
            query[field.name] = field.value
        }
        self.init(method: method, path: String(target[..<mark]), query: query, accept: accept, body: body, peer: peer)
    }

    /// The path's segments after the leading slash (`/v1/tokens/a` → `["v1", "tokens", "a"]`).
    public var segments: [String] {
        path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
    }
}

/// An answer of the socket API.
public struct APIResponse: Sendable, Hashable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]
    public var headers: [TokenRequest.Header]

    public init(status: Int, contentType: String, body: [UInt8], headers: [TokenRequest.Header] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }
}

/// What the router may read of the running instances: a snapshot published by the scheduler.
public protocol InstanceDirectory: Sendable {
    func instance(named name: String) -> InstanceStateMachine?
    /// Whether there is an instance of that name (without copying its state).
    func contains(_ name: String) -> Bool
    func allInstances() -> [(name: String, machine: InstanceStateMachine)]
    /// Who may read the instance's token; nil when the socket's permissions decide.
    func access(named name: String) -> AccessPolicy?
}

extension InstanceDirectory {
    public func access(named name: String) -> AccessPolicy? { nil }
    public func contains(_ name: String) -> Bool { instance(named: name) != nil }
}

/// Maps socket API requests to answers (SPEC §8).
///
/// Pure: the instances and `now` are passed in.
public struct APIRouter: Sendable {
    /// What a request asks for.
    public enum Route: Sendable, Hashable {
        case token(name: String)
        case watch(name: String)
        case invalidate(name: String)
        case instances
        case refresh(name: String)
        case health
        case metrics
        case notFound
        case methodNotAllowed
    }

    /// Who may use the admin endpoints; nil skips admin checks (no peer credentials to check).
    public var admin: AdminPolicy?

    public init(admin: AdminPolicy? = nil) {
        self.admin = admin
    }

    /// The instance a `/v1/tokens/NAME` path names (the request programs make on every call), without splitting
    /// the path; nil for every other path.
    public static func tokenName(inPath path: String) -> String? {
        // Over the string's bytes in place (`withUTF8` copies only a string that is not stored as UTF-8): this runs
        // for every token request, and the generic UTF-8 view walk is slower than the rest of the lookup.
        var path = path
        return path.withUTF8 { bytes in
            let prefix: StaticString = "/v1/tokens/"
            let prefixCount = prefix.utf8CodeUnitCount
            guard bytes.count > prefixCount,
                UnsafeBufferPointer(start: prefix.utf8Start, count: prefixCount).elementsEqual(bytes[..<prefixCount])
            else { return nil }
            let name = UnsafeBufferPointer(rebasing: bytes[prefixCount...])
            return name.contains(UInt8(ascii: "/")) ? nil : String(decoding: name, as: UTF8.self)
        }
    }

    public func route(_ request: APIRequest) -> Route {
        if request.method == "GET", let name = Self.tokenName(inPath: request.path) { return .token(name: name) }
        let segments = request.segments
        let method = request.method
        switch segments.count {
        case 2 where segments == ["v1", "instances"]:
            return method == "GET" ? .instances : .methodNotAllowed
        case 2 where segments == ["v1", "health"]:
            return method == "GET" ? .health : .methodNotAllowed
        case 1 where segments == ["metrics"]:
            return method == "GET" ? .metrics : .methodNotAllowed
        case 3 where segments[0] == "v1" && segments[1] == "tokens" && !segments[2].isEmpty:
            return method == "GET" ? .token(name: segments[2]) : .methodNotAllowed
        case 4 where segments[0] == "v1" && segments[1] == "tokens" && !segments[2].isEmpty && segments[3] == "watch":
            return method == "GET" ? .watch(name: segments[2]) : .methodNotAllowed
        case 4 where segments[0] == "v1" && segments[1] == "tokens" && !segments[2].isEmpty && segments[3] == "invalidate":
            return method == "POST" ? .invalidate(name: segments[2]) : .methodNotAllowed
        case 4 where segments[0] == "v1" && segments[1] == "instances" && !segments[2].isEmpty && segments[3] == "refresh":
            return method == "POST" ? .refresh(name: segments[2]) : .methodNotAllowed
        default:
            return .notFound
        }
    }

    /// Whether the caller may read `name`'s token: no peer credentials, no `[access]` rule, a matching rule, or admin.
    public func mayRead(_ name: String, peer: PeerCredentials?, instances: some InstanceDirectory) -> Bool {
        guard let peer, let policy = instances.access(named: name) else { return true }
        return policy.allows(peer) || admin?.allows(peer) == true
    }

    public func isAdmin(_ peer: PeerCredentials?) -> Bool {
        guard let peer, let admin else { return true }
        return admin.allows(peer)
    }

    /// The refusal for a route that names an instance, or nil when the caller may go on: 404 for an unknown
    /// instance, 403 for a caller the instance's `[access]` (or the admin rule) does not allow.
    public func refusal(for route: Route, request: APIRequest, instances: some InstanceDirectory) -> APIResponse? {
        switch route {
        case .token(let name), .invalidate(let name), .watch(let name):
            guard instances.contains(name) else { return unknownInstance(name) }
            return mayRead(name, peer: request.peer, instances: instances) ? nil : forbidden()
        case .refresh(let name):
            guard isAdmin(request.peer) else { return forbidden() }
            return instances.contains(name) ? nil : unknownInstance(name)
        case .metrics:
            return isAdmin(request.peer) ? nil : forbidden()
        case .instances, .health, .notFound, .methodNotAllowed:
            return nil
        }
    }

    public func respond(to request: APIRequest, instances: some InstanceDirectory, now: Date) -> APIResponse {
        let route = self.route(request)
        if let refusal = refusal(for: route, request: request, instances: instances) { return refusal }
        switch route {
        case .token(let name):
            return token(named: name, request: request, instances: instances, now: now)
        case .instances:
            let visible = instances.allInstances().filter { mayRead($0.name, peer: request.peer, instances: instances) }
            let sorted = visible.sorted { $0.name < $1.name }
            return json(200, API.InstancesBody(instances: sorted.map { status(name: $0.name, machine: $0.machine, now: now) }))
        case .health:
            var reasons: [String: String] = [:]
            for (name, machine) in instances.allInstances() where machine.servableToken(at: now) == nil {
                reasons[name] = machine.lastFailure?.code ?? machine.state(at: now).rawValue
            }
            return json(
                reasons.isEmpty ? 200 : 503,
                API.HealthBody(status: reasons.isEmpty ? "ok" : "degraded", reasons: reasons)
            )
        case .invalidate, .refresh, .metrics, .watch:
            // Commands change the scheduler's state; the daemon answers them before the router is asked.
            return error(503, "unavailable", "this endpoint needs the running daemon")
        case .methodNotAllowed:
            return error(405, "method_not_allowed", "\(request.method) is not allowed here")
        case .notFound:
            return error(404, "not_found", "no such endpoint")
        }
    }

    /// The token fingerprint of a `POST …/invalidate` body (`{"fingerprint":"<16 hex>"}`), or nil when malformed.
    public func invalidatedFingerprint(_ request: APIRequest) -> String? {
        guard let text = JSONValue.parse(request.body)?.value(at: "fingerprint")?.stringValue,
            text.utf8.count == 16, text.unicodeScalars.allSatisfy({ "0123456789abcdef".unicodeScalars.contains($0) })
        else { return nil }
        return text
    }

    public func unknownInstance(_ name: String) -> APIResponse {
        error(404, "unknown_instance", "no instance named '\(String(name.prefix(100)))'")
    }

    public func forbidden() -> APIResponse {
        error(403, "forbidden", "this caller may not use this endpoint or instance")
    }

    /// The instance and `min_valid` of a well-formed `GET /v1/tokens/{name}?min_valid=N`; nil for anything else.
    public func minValidRequest(_ request: APIRequest) -> (name: String, minValid: Double)? {
        guard case .token(let name) = route(request), let text = request.query["min_valid"],
            let seconds = Self.seconds(text)
        else { return nil }
        return (name, seconds)
    }

    func token(named name: String, request: APIRequest, instances: some InstanceDirectory, now: Date) -> APIResponse {
        guard let machine = instances.instance(named: name) else { return unknownInstance(name) }
        return token(named: name, machine: machine, request: request, now: now)
    }

    /// The answer to `GET /v1/tokens/{name}` from the instance's state, for a caller already allowed to read it.
    public func token(named name: String, machine: InstanceStateMachine, request: APIRequest, now: Date) -> APIResponse {
        var minValid = 0.0
        if let text = request.query["min_valid"] {
            guard let seconds = Self.seconds(text) else {
                return error(400, "bad_min_valid", "min_valid must be a whole number of seconds")
            }
            minValid = seconds
        }
        let retry = machine.nextAttempt.map { max(1, Int($0.timeIntervalSince(now).rounded(.up))) } ?? 1
        guard let token = machine.servableToken(at: now) else {
            return unavailable(
                name: name,
                message: machine.lastFailure.map { "no valid token: \($0.message)" } ?? "no valid token yet",
                lastError: machine.lastFailure?.code,
                retryAfter: retry
            )
        }
        guard token.serveUntil.timeIntervalSince(now) >= minValid else {
            return unavailable(
                name: name,
                message: "no token valid for \(Int(minValid)) s",
                lastError: machine.lastFailure?.code,
                retryAfter: retry
            )
        }
        return tokenResponse(name: name, token: token, request: request, now: now)
    }

    /// A 200 answer carrying `token` in the format the request asks for (`format=` or `Accept: text/plain`).
    public func tokenResponse(name: String, token: IssuedToken, request: APIRequest, now: Date) -> APIResponse {
        switch Self.tokenFormat(of: request) {
        case "raw":
            return APIResponse(status: 200, contentType: "text/plain; charset=utf-8", body: Array(token.accessToken.revealed.utf8))
        case "header":
            return APIResponse(
                status: 200,
                contentType: "text/plain; charset=utf-8",
                body: Array("\(token.tokenType) \(token.accessToken.revealed)".utf8)
            )
        case "json":
            let body = API.TokenBody(
                instance: name,
                access_token: token.accessToken.revealed,
                token_type: token.tokenType,
                expires_at: Int(token.expiresAt.timeIntervalSince1970),
                expires_in: Self.expiresIn(token, now: now),
                scope: token.scope
            )
            return APIResponse(status: 200, contentType: "application/json", body: body.json())
        default:
            return error(400, "bad_format", "format must be json, raw or header")
        }
    }

    /// The format a token request asks for: `format=`, else `raw` for `Accept: text/plain`, else `json`.
    public static func tokenFormat(of request: APIRequest) -> String {
        request.query["format"] ?? (request.accept?.hasPrefix("text/plain") == true ? "raw" : "json")
    }

    /// The `expires_in` of a JSON token answer at `now`: whole seconds left, never negative.
    ///
    /// The only part of a token's answer that changes while the token stays the same.
    public static func expiresIn(_ token: IssuedToken, now: Date) -> Int {
        max(0, Int(token.expiresAt.timeIntervalSince(now)))
    }

    /// One `text/event-stream` event carrying the token as the JSON of `GET /v1/tokens/{name}`.
    public func tokenEvent(name: String, token: IssuedToken, now: Date) -> [UInt8] {
        var json = tokenResponse(name: name, token: token, request: APIRequest(method: "GET", path: ""), now: now).body
        while json.last == UInt8(ascii: "\n") { json.removeLast() }
        return Array("event: token\ndata: ".utf8) + json + Array("\n\n".utf8)
    }

    /// A 503 `no_valid_token` answer with `Retry-After`.
    public func unavailable(name: String, message: String, lastError: String?, retryAfter: Int) -> APIResponse {
        var response = error(503, "no_valid_token", message, instance: name, lastError: lastError)
        response.headers.append(.init("Retry-After", String(max(1, retryAfter))))
        return response
    }

    static func seconds(_ text: String) -> Double? {
        guard let value = Int(text), value >= 0, value <= 86_400 * 366 else { return nil }
        return Double(value)
    }

    func status(name: String, machine: InstanceStateMachine, now: Date) -> API.InstanceStatus {
        let token = machine.servableToken(at: now)
        return API.InstanceStatus(
            name: name,
            state: machine.state(at: now).rawValue,
            token_fingerprint: token?.fingerprint,
            expires_at: token.map { Int($0.expiresAt.timeIntervalSince1970) },
            next_refresh: machine.nextAttempt.map { Int($0.timeIntervalSince1970) },
            outage_budget_seconds: Int(machine.outageBudget(at: now)),
            consecutive_failures: machine.consecutiveFailures,
            last_error: machine.lastFailure.map {
                API.LastError(code: $0.code, message: $0.message, kind: $0.kind.rawValue)
            }
        )
    }

    public func json(_ status: Int, _ value: some Encodable) -> APIResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = (try? encoder.encode(value)).map { Array($0) + [UInt8(ascii: "\n")] } ?? []
        return APIResponse(status: status, contentType: "application/json", body: body)
    }

    public func error(
        _ status: Int,
        _ code: String,
        _ message: String,
        instance: String? = nil,
        lastError: String? = nil
    )
        -> APIResponse
    {
        json(status, API.ErrorBody(error: code, message: message, instance: instance, last_error: lastError))
    }
}
