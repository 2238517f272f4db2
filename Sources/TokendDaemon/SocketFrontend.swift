import Foundation
import Logging
import Synchronization
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

    /// The answer to the request programs make on every call, `GET /v1/tokens/NAME` (with no query but `format`) from a
    /// caller allowed to read a token that is servable now, made on the calling event loop from the snapshot without
    /// anything ``handle(_:respond:openStream:)`` allocates; nil for every other request, which then goes to `handle`.
    ///
    /// Both give the same answer where this one answers.
    func answerNow(_ request: APIRequest) -> APIResponse? {
        guard published.isLoaded, request.method == .get, let name = APIRouter.tokenName(inPath: request.path),
            let entry = published.published(named: name), case .success(let query) = TokenQuery.parse(request),
            query.minValid == nil
        else { return nil }
        if let peer = request.peer, let policy = published.access(named: name), !policy.allows(peer) { return nil }
        let now = clock.now()
        guard let token = entry.machine.servableToken(at: now) else { return nil }
        let application = query.format.usesApplication ? published.application(named: name) : nil
        let response = entry.tokenAnswer(
            name: name,
            token: token,
            format: query.format,
            now: now,
            router: scheduler.router,
            application: application
        )
        metrics.requestAnswered(endpoint: "token", status: response.status.code)
        return response
    }

    /// Performs the router's decision for one request: an answer from the snapshot, or an event for the scheduler.
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
        let metrics = self.metrics
        let endpoint = Self.endpointLabel(router.route(request))
        let respond: @Sendable (APIResponse) -> Void = { response in
            metrics.requestAnswered(endpoint: endpoint, status: response.status.code)
            answer(response)
        }
        switch router.decide(request, instances: published, now: now, isReady: published.isReady) {
        case .answer(let response):
            respond(response)
        case .refuse(let response):
            if let peer = request.peer {
                refused(peer, target: router.route(request).instance ?? String(request.path.prefix(100)))
            }
            respond(response)
        case .waitForToken(let name, let minValid, let format):
            scheduler.send(.tokenWanted(name: name, minValid: minValid, format: format, peer: request.peer, reply: respond))
        case .refresh(let name):
            scheduler.send(.refreshWanted(name: name, reply: respond))
        case .invalidate(let name, let fingerprint):
            scheduler.send(.invalidationWanted(name: name, fingerprint: fingerprint, reply: respond))
        case .watch(let name):
            metrics.requestAnswered(endpoint: endpoint, status: 200)
            scheduler.send(.watchWanted(name: name, peer: request.peer) { openStream("text/event-stream") })
        case .metrics:
            respond(APIResponse(status: .ok, contentType: TokendMetrics.contentType, body: scheduler.metricsExposition(now: now)))
        }
    }

    /// Counts a refusal of `peer` (a request, or a connection over its limits) in the per-caller refusal log, and
    /// logs what that says to log now.
    func refused(_ peer: PeerCredentials, target: String) {
        let now = clock.now()
        let lines = scheduler.refusals.withLock { $0.refused(uid: peer.uid, pid: peer.pid, target: target, now: now) }
        scheduler.log(refusals: lines)
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
