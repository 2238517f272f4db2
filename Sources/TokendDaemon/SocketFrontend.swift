import Foundation
import Logging
import TokendCore
import TokendIO

/// The socket's side of the daemon, on NIO's event loops: answers from the published snapshot when it can, and turns
/// the rest (commands, `min_valid` waits, start-up waits, watch streams) into scheduler events.
struct SocketFrontend: Sendable {
    let scheduler: Scheduler
    let logger: Logger

    private var published: PublishedInstances { scheduler.published }
    private var metrics: TokendMetrics { scheduler.metrics }
    private var clock: any DaemonClock { scheduler.adapters.clock }

    /// The answer to the request programs make on every call, `GET /v1/tokens/NAME` (with no query but `format`)
    /// from a caller allowed to read a token that is servable now, made on the calling event loop from the snapshot
    /// without anything ``handle(_:respond:openStream:)`` allocates; nil for every other request, which then goes to
    /// `handle`. Both give the same answer where this one answers.
    func answerNow(_ request: APIRequest) -> APIResponse? {
        guard published.isLoaded, request.method == "GET", request.query.keys.allSatisfy({ $0 == "format" }),
            let name = APIRouter.tokenName(inPath: request.path), let entry = published.published(named: name)
        else { return nil }
        if let peer = request.peer, let policy = published.access(named: name), !policy.allows(peer) { return nil }
        let now = clock.now()
        guard let token = entry.machine.servableToken(at: now) else { return nil }
        let response = entry.tokenAnswer(name: name, token: token, request: request, now: now, router: scheduler.router)
        metrics.requestAnswered(endpoint: "token", status: response.status)
        return response
    }

    /// Answers one socket request: from the published snapshot when it can, through the scheduler for commands and
    /// for `min_valid` requests the current token cannot satisfy.
    func handle(
        _ request: APIRequest,
        respond answer: @escaping @Sendable (APIResponse) -> Void,
        openStream: @escaping @Sendable (String) -> any TokenEventStream
    ) {
        guard published.isLoaded else {
            // Start-up is still on the scheduler queue; once it is done the snapshot has every instance.
            scheduler.queue.async { self.handle(request, respond: answer, openStream: openStream) }
            return
        }
        let now = clock.now()
        var router = scheduler.router
        router.admin = published.admin
        let route = router.route(request)
        let metrics = self.metrics
        let endpoint = Self.endpointLabel(route)
        let respond: @Sendable (APIResponse) -> Void = { response in
            metrics.requestAnswered(endpoint: endpoint, status: response.status)
            answer(response)
        }
        if let refusal = router.refusal(for: route, request: request, instances: published) {
            if refusal.status == 403, let peer = request.peer {
                logger.warning(
                    "request refused",
                    metadata: ["peer.uid": "\(peer.uid)", "peer.pid": "\(peer.pid)", "path": "\(String(request.path.prefix(200)))"]
                )
            }
            respond(refusal)
            return
        }
        switch route {
        case .refresh(let name):
            scheduler.send(.refreshWanted(name: name, reply: respond))
        case .invalidate(let name):
            guard let fingerprint = router.invalidatedFingerprint(request) else {
                respond(router.error(400, "bad_fingerprint", #"expected {"fingerprint":"<first 16 hex digits of sha256(token)>"}"#))
                return
            }
            scheduler.send(.invalidationWanted(name: name, fingerprint: fingerprint, reply: respond))
        case .watch(let name):
            metrics.requestAnswered(endpoint: endpoint, status: 200)
            scheduler.send(.watchWanted(name: name, peer: request.peer) { openStream("text/event-stream") })
        case .metrics:
            let body = metrics.render(published.allInstances(), now: now)
            respond(APIResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: body))
        case .token(let name):
            // A min_valid request that the published token cannot satisfy goes to the scheduler, which starts or joins
            // one shared refresh. So does, during start-up (before READY=1), a plain request for an instance whose first
            // attempt has not finished: a socket-activated daemon's first caller waits for the token instead of
            // getting 503. Everything else is answered from the snapshot, from one copy of the instance's state.
            guard let machine = published.instance(named: name) else {
                respond(router.unknownInstance(name))
                return
            }
            let explicit = request.query.isEmpty ? nil : router.minValidRequest(request)
            let wanted = explicit ?? (request.query["min_valid"] == nil ? (name, 0) : nil)
            if let wanted {
                let validFor = machine.servableToken(at: now)?.serveUntil.timeIntervalSince(now)
                if validFor.map({ $0 < wanted.minValid }) ?? (explicit != nil || (!machine.hasSettled && !published.isReady)) {
                    scheduler.send(.tokenWanted(name: wanted.name, minValid: wanted.minValid, request: request, reply: respond))
                    return
                }
            }
            respond(router.token(named: name, machine: machine, request: request, now: now))
        default:
            respond(router.respond(to: request, instances: published, now: now))
        }
    }

    private static func endpointLabel(_ route: APIRouter.Route) -> String {
        switch route {
        case .token: "token"
        case .watch: "watch"
        case .invalidate: "invalidate"
        case .instances: "instances"
        case .refresh: "refresh"
        case .health: "health"
        case .metrics: "metrics"
        case .notFound, .methodNotAllowed: "other"
        }
    }
}
