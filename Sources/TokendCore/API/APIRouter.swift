import Foundation

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

        /// The instance the route names, if any.
        public var instance: String? {
            switch self {
            case .token(let name), .watch(let name), .invalidate(let name), .refresh(let name): name
            case .instances, .health, .metrics, .notFound, .methodNotAllowed: nil
            }
        }
    }

    /// What the socket does with a request: answer it now from the snapshot, or hand it to the scheduler.
    public enum Decision: Sendable, Hashable {
        /// Answer with this, now.
        case answer(APIResponse)
        /// The caller may not do this: answer with this (a 403, or a 404 for an instance it may not use) and log the
        /// refusal.
        case refuse(APIResponse)
        /// The snapshot has no token valid for `minValid` s (0: none yet, during start-up): the scheduler serves,
        /// refuses or starts or joins one shared refresh.
        case waitForToken(name: String, minValid: Double, format: TokenFormat)
        /// Refresh the instance now (an admin asked).
        case refresh(name: String)
        /// Drop the token with this fingerprint if it is still the current one.
        case invalidate(name: String, fingerprint: String)
        /// Open an event stream of the instance's tokens.
        case watch(name: String)
        /// The Prometheus metrics (kept outside the core).
        case metrics
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
        if request.method == .get, let name = Self.tokenName(inPath: request.path) { return .token(name: name) }
        let segments = request.segments
        let method = request.method
        switch segments.count {
        case 2 where segments == ["v1", "instances"]:
            return method == .get ? .instances : .methodNotAllowed
        case 2 where segments == ["v1", "health"]:
            return method == .get ? .health : .methodNotAllowed
        case 1 where segments == ["metrics"]:
            return method == .get ? .metrics : .methodNotAllowed
        case 3 where segments[0] == "v1" && segments[1] == "tokens" && !segments[2].isEmpty:
            return method == .get ? .token(name: segments[2]) : .methodNotAllowed
        case 4 where segments[0] == "v1" && segments[1] == "tokens" && !segments[2].isEmpty && segments[3] == "watch":
            return method == .get ? .watch(name: segments[2]) : .methodNotAllowed
        case 4 where segments[0] == "v1" && segments[1] == "tokens" && !segments[2].isEmpty && segments[3] == "invalidate":
            return method == .post ? .invalidate(name: segments[2]) : .methodNotAllowed
        case 4 where segments[0] == "v1" && segments[1] == "instances" && !segments[2].isEmpty && segments[3] == "refresh":
            return method == .post ? .refresh(name: segments[2]) : .methodNotAllowed
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
    /// instance, and the same 404 for an instance whose `[access]` (or the admin rule) does not allow the caller, so
    /// that a caller cannot tell the instances it may not use from names that do not exist; 403 for an admin
    /// endpoint.
    public func refusal(for route: Route, request: APIRequest, instances: some InstanceDirectory) -> APIResponse? {
        switch route {
        case .token(let name), .invalidate(let name), .watch(let name):
            guard instances.contains(name) else { return unknownInstance(name) }
            return mayRead(name, peer: request.peer, instances: instances) ? nil : unknownInstance(name)
        case .refresh(let name):
            guard isAdmin(request.peer) else { return forbidden() }
            return instances.contains(name) ? nil : unknownInstance(name)
        case .metrics:
            return isAdmin(request.peer) ? nil : forbidden()
        case .instances, .health, .notFound, .methodNotAllowed:
            return nil
        }
    }

    /// What to do with `request`, from the published instances at `now`; `isReady` says whether READY=1 went out
    /// (before that, a request for an instance without a first token waits for it).
    public func decide(_ request: APIRequest, instances: some InstanceDirectory, now: Date, isReady: Bool = true) -> Decision {
        let route = self.route(request)
        if let refusal = refusal(for: route, request: request, instances: instances) {
            // A 403, or the 404 that hides an instance the caller may not use: refused (and logged).
            let refused = refusal.status == .forbidden || route.instance.map(instances.contains) == true
            return refused ? .refuse(refusal) : .answer(refusal)
        }
        switch route {
        case .token(let name):
            guard let machine = instances.instance(named: name) else { return .answer(unknownInstance(name)) }
            let query: TokenQuery
            switch TokenQuery.parse(request) {
            case .success(let parsed): query = parsed
            case .failure(.badFormat): return .answer(error(400, "bad_format", "format must be json, raw, header or apply"))
            case .failure(.badMinValid): return .answer(error(400, "bad_min_valid", "min_valid must be a whole number of seconds"))
            }
            let validFor = machine.servableToken(at: now)?.serveUntil.timeIntervalSince(now)
            if let minValid = query.minValid, validFor.map({ $0 < minValid }) ?? true {
                return .waitForToken(name: name, minValid: minValid, format: query.format)
            }
            // Before READY=1 a first token is awaited; after an invalidation, its replacement (fetched now).
            if validFor == nil, (!machine.hasSettled && !isReady) || machine.isReplacingInvalidated {
                return .waitForToken(name: name, minValid: 0, format: query.format)
            }
            let application = query.format.usesApplication ? instances.application(named: name) : nil
            return .answer(token(named: name, machine: machine, format: query.format, now: now, application: application ?? .standard))
        case .invalidate(let name):
            guard let fingerprint = invalidatedFingerprint(request) else {
                return .answer(error(400, "bad_fingerprint", #"expected {"fingerprint":"<first 16 hex digits of sha256(token)>"}"#))
            }
            return .invalidate(name: name, fingerprint: fingerprint)
        case .refresh(let name):
            return .refresh(name: name)
        case .watch(let name):
            return .watch(name: name)
        case .metrics:
            return .metrics
        case .instances:
            let visible = instances.allInstances().filter { mayRead($0.name, peer: request.peer, instances: instances) }
            let sorted = visible.sorted { $0.name < $1.name }
            let errors = isAdmin(request.peer) ? instances.configErrors : []
            let body = API.InstancesBody(
                instances: sorted.map { entry in
                    var status = status(name: entry.name, machine: entry.machine, now: now)
                    status.fleet = instances.fleetRole(named: entry.name)
                    return status
                },
                config_errors: errors.isEmpty ? nil : errors,
                fleet: instances.fleet
            )
            return .answer(json(200, body))
        case .health:
            // The instances the caller may read, as in `/v1/instances`: the others are neither named nor counted.
            var reasons: [String: String] = [:]
            for (name, machine) in instances.allInstances()
            where machine.servableToken(at: now) == nil && mayRead(name, peer: request.peer, instances: instances) {
                reasons[name] = machine.reportedFailure?.code ?? machine.state(at: now).rawValue
            }
            return .answer(json(reasons.isEmpty ? 200 : 503, API.HealthBody(status: reasons.isEmpty ? "ok" : "degraded", reasons: reasons)))
        case .methodNotAllowed:
            return .answer(error(405, "method_not_allowed", "\(request.method) is not allowed here"))
        case .notFound:
            return .answer(error(404, "not_found", "no such endpoint"))
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
        error(404, "unknown_instance", "no instance named '\(String(name.prefix(100)))' that this caller may use")
    }

    public func forbidden() -> APIResponse {
        error(403, "forbidden", "this caller may not use this endpoint or instance")
    }

    /// The answer to `GET /v1/tokens/{name}` from the instance's state, for a caller already allowed to read it:
    /// the servable token, or 503 with the last error and when the next attempt is due.
    public func token(
        named name: String,
        machine: InstanceStateMachine,
        format: TokenFormat,
        now: Date,
        application: TokenApplication = .standard
    ) -> APIResponse {
        guard let token = machine.servableToken(at: now) else {
            return unavailable(
                name: name,
                message: machine.reportedFailure.map { "no valid token: \($0.message)" } ?? "no valid token yet",
                lastError: machine.reportedFailure?.code,
                retryAfter: machine.nextAttempt.map { max(1, Int($0.timeIntervalSince(now).rounded(.up))) } ?? 1
            )
        }
        return tokenResponse(name: name, token: token, format: format, now: now, application: application)
    }

    /// A 200 answer carrying `token` in `format`; `header` and `apply` follow the instance's `application`.
    public func tokenResponse(
        name: String,
        token: IssuedToken,
        format: TokenFormat,
        now: Date,
        application: TokenApplication = .standard
    ) -> APIResponse {
        switch format {
        case .raw:
            return APIResponse(status: .ok, contentType: "text/plain; charset=utf-8", body: Array(token.accessToken.revealed.utf8))
        case .header:
            return APIResponse(
                status: .ok,
                contentType: "text/plain; charset=utf-8",
                body: Array(application.headerValue(for: token).utf8)
            )
        case .apply:
            return json(.ok, application.body(name: name, token: token, now: now))
        case .json:
            let body = API.TokenBody(
                instance: name,
                access_token: token.accessToken.revealed,
                token_type: token.tokenType,
                expires_at: Int(token.expiresAt.timeIntervalSince1970),
                expires_in: Self.expiresIn(token, now: now),
                scope: token.scope
            )
            return APIResponse(status: .ok, contentType: "application/json", body: body.json())
        }
    }

    /// The `expires_in` of a JSON token answer at `now`: whole seconds left, never negative.
    ///
    /// The only part of a token's answer that changes while the token stays the same.
    public static func expiresIn(_ token: IssuedToken, now: Date) -> Int {
        max(0, Int(token.expiresAt.timeIntervalSince(now)))
    }

    /// One `text/event-stream` event carrying the token as the JSON of `GET /v1/tokens/{name}`.
    public func tokenEvent(name: String, token: IssuedToken, now: Date) -> [UInt8] {
        var json = tokenResponse(name: name, token: token, format: .json, now: now).body
        while json.last == UInt8(ascii: "\n") { json.removeLast() }
        return Array("event: token\ndata: ".utf8) + json + Array("\n\n".utf8)
    }

    /// A 503 `no_valid_token` answer with `Retry-After`.
    public func unavailable(name: String, message: String, lastError: String?, retryAfter: Int) -> APIResponse {
        var response = error(503, "no_valid_token", message, instance: name, lastError: lastError)
        response.headers.append(.init("Retry-After", String(max(1, retryAfter))))
        return response
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
            last_error: machine.reportedFailure.map {
                API.LastError(code: $0.code, message: $0.message, kind: $0.kind.rawValue)
            }
        )
    }

    public func json(_ status: APIStatus, _ value: some Encodable) -> APIResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = (try? encoder.encode(value)).map { Array($0) + [UInt8(ascii: "\n")] } ?? []
        return APIResponse(status: status, contentType: "application/json", body: body)
    }

    public func error(
        _ status: APIStatus,
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
