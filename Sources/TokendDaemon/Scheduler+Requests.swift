import Foundation
import Logging
import TokendCore
import TokendIO

extension Scheduler {
    /// A client wants a token valid for at least `minValid` seconds that the snapshot did not have (or, during
    /// start-up, any token of an instance whose first attempt has not finished): serve, refuse, or wait for the one
    /// shared refresh, bounded by the HTTP timeout.
    func tokenWanted(_ name: String, minValid: Double, format: TokenFormat, peer: PeerCredentials?, reply: @escaping Reply) {
        let now = adapters.clock.now()
        guard !isStopping, let running = instances[name] else {
            reply(isStopping ? stoppingAnswer() : router.unknownInstance(name))
            return
        }
        let (answer, actions) = running.machine.tokenRequested(minValid: minValid, now: now)
        switch answer {
        case .serve(let token):
            reply(router.tokenResponse(name: name, token: token, format: format, now: now, application: application(of: name)))
        case .reject(let reason, let retryAt):
            let retryAfter = retryAt.map { Int($0.timeIntervalSince(now).rounded(.up)) } ?? 1
            reply(router.unavailable(name: name, message: reason, lastError: running.machine.reportedFailure?.code, retryAfter: retryAfter))
        case .wait:
            let id = waiters.add(name, minValid: minValid, format: format, peer: peer, reply: reply)
            // Bounded by the HTTP timeout: a refresh queued behind the concurrency limits may take longer.
            waiterTimers[id] = adapters.clock.after(settings.requestTimeout, on: queue) { [unowned self] in
                self.handle(.waiterTimedOut(name: name, id: id))
            }
        }
        perform(actions, for: name)
    }

    func waiterTimedOut(_ name: String, id: Int) {
        waiterTimers[id] = nil
        guard let waiter = waiters.take(id: id, of: name) else { return }
        waiter.reply(router.unavailable(name: name, message: "timed out waiting for a refresh", lastError: nil, retryAfter: 1))
    }

    /// Answers a waiter and forgets its timer.
    func reply(_ waiter: WaiterBook<Reply>.Waiter, _ response: APIResponse) {
        waiterTimers.removeValue(forKey: waiter.id)?.cancel()
        waiter.reply(response)
    }

    /// A refresh brought `token`: each waiter checks its own `min_valid`.
    func serveWaiters(_ name: String, token: IssuedToken) {
        let now = adapters.clock.now()
        let validFor = token.serveUntil.timeIntervalSince(now)
        for waiter in waiters.take(name) {
            if validFor >= waiter.minValid {
                let response = router.tokenResponse(
                    name: name,
                    token: token,
                    format: waiter.format,
                    now: now,
                    application: application(of: name)
                )
                reply(waiter, response)
            } else {
                let message = "the new token is valid for only \(Int(validFor)) s, less than min_valid"
                reply(waiter, router.unavailable(name: name, message: message, lastError: nil, retryAfter: 1))
            }
        }
    }

    /// How `name`'s token is applied (`[apply]`), as the socket's snapshot has it.
    func application(of name: String) -> TokenApplication {
        published.application(named: name) ?? .standard
    }

    /// `POST /v1/instances/{name}/refresh`: refresh now, joining a refresh in flight.
    func refreshWanted(_ name: String, reply: @escaping Reply) {
        guard !isStopping, let running = instances[name] else {
            reply(isStopping ? stoppingAnswer() : router.unknownInstance(name))
            return
        }
        let actions = running.machine.refreshRequested(now: adapters.clock.now())
        logger.info("refresh requested", metadata: ["instance": "\(name)"])
        perform(actions, for: name)
        reply(router.json(202, API.CommandBody(instance: name, accepted: true, message: "refresh started")))
    }

    /// `POST /v1/tokens/{name}/invalidate`: drop the token if the caller's fingerprint still names it and its
    /// replacement may be fetched now.
    func invalidationWanted(_ name: String, fingerprint: String, reply: @escaping Reply) {
        guard !isStopping, let running = instances[name] else {
            reply(isStopping ? stoppingAnswer() : router.unknownInstance(name))
            return
        }
        let now = adapters.clock.now()
        let (outcome, actions) = running.machine.tokenInvalidated(fingerprint: fingerprint, now: now)
        // Shared: the fleet's compare-and-swap decides the answer (this host fetches, or another already did).
        var deferred = false
        if outcome == .accepted, fleetShares(name), var member = fleetMember(name) {
            member.invalidated = fingerprint
            member.invalidationReplies.append(reply)
            fleetMembers[name] = member
            deferred = true
        }
        perform(actions, for: name)
        switch outcome {
        case .accepted:
            logger.warning("token invalidated by a client", metadata: ["instance": "\(name)", "token": "\(fingerprint)"])
            removeSink(running.resolved.sink)
            scheduleStatusUpdate()
            if !deferred {
                reply(router.json(202, API.CommandBody(instance: name, accepted: true, message: "token dropped; refreshing")))
            }
        case .notCurrent:
            let message = "fingerprint is not the current token's; nothing changed"
            reply(router.json(200, API.CommandBody(instance: name, accepted: false, message: message)))
        case .tooSoon(let retryAt):
            let message = "the last refresh started less than min_interval ago; nothing changed"
            var response = router.json(200, API.CommandBody(instance: name, accepted: false, message: message))
            response.headers.append(.init("Retry-After", String(max(1, Int(retryAt.timeIntervalSince(now).rounded(.up))))))
            reply(response)
        }
    }

    /// `GET /v1/tokens/{name}/watch`: the current token as an event, then each new one, until the client leaves, the
    /// instance is removed or tokend stops.
    func watchWanted(_ name: String, peer: PeerCredentials?, open: @Sendable () -> any TokenEventStream) {
        let stream = open()
        guard !isStopping, let running = instances[name] else {
            stream.finish()
            return
        }
        let now = adapters.clock.now()
        if let token = running.machine.servableToken(at: now) {
            stream.send(router.tokenEvent(name: name, token: token, now: now))
        }
        watchers.add(name, peer: peer, stream: stream)
    }

    func notifyWatchers(_ name: String, token: IssuedToken) {
        let streams = watchers.open(name) { $0.isOpen }
        guard !streams.isEmpty else { return }
        let event = router.tokenEvent(name: name, token: token, now: adapters.clock.now())
        for stream in streams { stream.send(event) }
    }

    func stoppingAnswer() -> APIResponse {
        router.unavailable(name: "", message: "tokend is stopping", lastError: nil, retryAfter: 1)
    }
}
