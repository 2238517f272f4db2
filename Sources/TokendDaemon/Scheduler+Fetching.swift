import Foundation
import Logging
import TokendCore
import TokendIO

extension Scheduler {
    /// Starts a token request for `name` when the limits allow; otherwise it waits for a free place.
    func startFetch(_ name: String) {
        guard !isStopping, let running = instances[name] else { return }
        let host = running.resolved.endpointHost
        guard limiter.admit(name, host: host) else { return }
        send(request(for: running), of: name, host: host, generation: running.generation)
    }

    /// The instance's request, rendered for this fetch (not kept between fetches); a client assertion is signed for
    /// each request, with a fresh jti and the current time.
    private func request(for running: RunningInstance) -> Result<TokenRequest, FetchFailure> {
        var resolved = running.resolved
        if resolved.definition.hasLiveInputs {
            // Inputs are read again right before every fetch (SPEC §11).
            let now = adapters.clock.now()
            readInputs(running)
            let live = liveInputs(of: running, now: now)
            if let missing = live.missing { return .failure(missing) }
            resolved = running.resolved
            for (variable, value) in live.values { resolved.values[variable] = value }
            running.attemptedWith = live.values
            running.boundUntil = running.machine.policy.settings.boundToInput ? live.bound : nil
        }
        switch resolved.renderRequest() {
        case .success(let request):
            return request.signingAssertion(now: adapters.clock.now(), jti: UUID().uuidString).mapError {
                FetchFailure(kind: .permanent, code: "invalid_client_assertion", message: $0.message)
            }
        case .failure(let diagnostic):
            return .failure(FetchFailure(kind: .permanent, code: "invalid_request", message: diagnostic.message))
        }
    }

    private func send(_ request: Result<TokenRequest, FetchFailure>, of name: String, host: String, generation: Int) {
        logger.debug("fetching token", metadata: ["instance": "\(name)", "endpoint": "\(host)"])
        let finished: @Sendable (Result<TokenEndpointResponse, FetchFailure>) -> Void = { result in
            self.send(.fetchFinished(name: name, host: host, generation: generation, result: result))
        }
        switch request {
        case .success(let request):
            adapters.endpoint.start(request, completion: finished)
        case .failure(let failure):
            finished(.failure(failure))
        }
    }

    func fetchFinished(_ name: String, host: String, generation: Int, result: Result<TokenEndpointResponse, FetchFailure>) {
        for next in limiter.finished(host: host, isWanted: { instances[$0] != nil && !isStopping }) {
            if let running = instances[next.name] {
                send(request(for: running), of: next.name, host: next.host, generation: running.generation)
            }
        }
        guard !isStopping, let running = instances[name], running.generation == generation else { return }
        let now = adapters.clock.now()
        let resolved = running.resolved
        // The input instances' tokens the request carried are as secret as its own credentials.
        let inputTokens = resolved.definition.instanceInputs.compactMap { running.attemptedWith?[$0.variable]?.revealed }
        let sensitive = resolved.sensitiveValues + inputTokens.filter { !$0.isEmpty }
        let parsed = result.flatMap { response in
            TokenResponseParser.parse(
                status: response.status,
                body: response.body,
                retryAfter: response.retryAfter,
                shape: .init(resolved.definition.connector),
                requestedScope: resolved.variable("scope")?.revealed,
                secrets: sensitive,
                contentType: response.contentType,
                now: now
            )
        }.mapError { $0.redacting(sensitive) }
        let actions: [InstanceStateMachine.Action]
        switch parsed {
        case .success(var token):
            // `bound_to_input`: never served after the token it was obtained with (SPEC §11).
            if let bound = running.boundUntil, token.expiresAt > bound { token.expiresAt = bound }
            metrics.refreshFinished(instance: name, result: "success")
            fleetFetchFinished(name, token: token)
            actions = running.machine.tokenReceived(token)
            logger.info(
                "token refreshed",
                metadata: [
                    "instance": "\(name)",
                    "token": "\(token.fingerprint)",
                    "expires_in_s": "\(Int(token.lifetime))",
                ]
            )
        case .failure(let failure):
            metrics.refreshFinished(instance: name, result: failure.kind.rawValue)
            fleetFetchFinished(name, token: nil)
            actions = running.machine.fetchFailed(failure, now: now, using: &random)
            logger.warning(
                "token fetch failed",
                metadata: [
                    "instance": "\(name)",
                    "oauth.error": "\(failure.code)",
                    "kind": "\(failure.kind.rawValue)",
                    "message": "\(failure.message)",
                    "attempt": "\(running.machine.consecutiveFailures)",
                    "retry_in_s": "\(Int((running.machine.nextAttempt ?? now).timeIntervalSince(now)))",
                    "outage_budget_s": "\(Int(running.machine.outageBudget(at: now)))",
                ]
            )
        }
        perform(actions, for: name)
        settled(name)
    }

    /// Cache writes are durable: each token still awaited is served from now on.
    func tokensStored(_ written: [StoredToken]) {
        guard !isStopping else { return }
        for record in written {
            guard let running = instances[record.instance], running.generation == record.generation else { continue }
            perform(running.machine.tokenStored(fingerprint: record.fingerprint, using: &random), for: record.instance)
            settled(record.instance)
        }
    }

    /// After an attempt's outcome: readiness, `STATUS=` and READY=1 see the instance's new state.
    func settled(_ name: String) {
        guard let running = instances[name], running.machine.hasSettled else { return }
        readiness.settled(name)
        scheduleStatusUpdate()
        becomeReady(startupTimedOut: false)
    }
}
