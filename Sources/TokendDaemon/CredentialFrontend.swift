import Foundation
import Logging
import Synchronization
import TokendCore
import TokendIO

/// credentials.sock's side of the daemon (SPEC §10): decides from the published snapshot which token a unit started
/// with `LoadCredential=ID:…/credentials.sock` gets, and logs each refusal (rate-limited like the API socket's).
struct CredentialFrontend: Sendable {
    let scheduler: Scheduler

    private var logger: Logger { scheduler.logger }

    /// Answers a connection from `address` with the token's bytes, or nil to close without data.
    func answer(_ address: [UInt8], reply: @escaping @Sendable ([UInt8]?) -> Void) {
        guard let request = CredentialRequest.parse(address: address) else {
            logger.debug("credentials.sock: the peer's address is not systemd's LoadCredential= one; closed without data")
            reply(nil)
            return
        }
        let published = scheduler.published
        guard published.isLoaded else {
            // Start-up is still on the scheduler queue; once it is done the snapshot has every instance.
            scheduler.queue.async { self.answer(address, reply: reply) }
            return
        }
        let grant = published.credential(id: request.id)
        var token: IssuedToken?
        var reason = "the instance has no valid token"
        if let grant, let entry = published.published(named: grant.instance) {
            token = entry.machine.servableToken(at: scheduler.adapters.clock.now())
            if let failure = entry.machine.reportedFailure { reason += " (last error: \(failure.code))" }
        }
        let decision = CredentialDecision.decide(
            request,
            instance: grant?.instance,
            units: grant?.units ?? [],
            token: token?.accessToken,
            noTokenReason: reason
        )
        switch decision {
        case .serve(let instance, let token):
            served(request, instance: instance)
            reply(Array(token.revealed.utf8))
        case .refuse(let instance?, _)
        where token == nil && !published.isReady
            && grant?.units.contains(where: {
                UnitPattern.matches($0, request.unit)
            }) == true:
            // During start-up a unit allowed to load the token waits for the first fetch, like a socket caller.
            scheduler.send(
                .tokenWanted(name: instance, minValid: 0, format: .raw, peer: nil) { response in
                    guard response.status.code == 200 else {
                        refused(request, instance: instance, reason: "no valid token after start-up (HTTP \(response.status.code))")
                        reply(nil)
                        return
                    }
                    served(request, instance: instance)
                    reply(response.body)
                }
            )
        case .refuse(let instance, let reason):
            refused(request, instance: instance, reason: reason)
            reply(nil)
        }
    }

    private func served(_ request: CredentialRequest, instance: String) {
        logger.info(
            "credential served",
            metadata: ["unit": "\(request.unit)", "credential": "\(request.id)", "instance": "\(instance)"]
        )
    }

    /// Logs a refusal: the first of a window at once, the rest summed up when it ends (``RefusalLog``, one window
    /// for the service manager, which makes every credential connection).
    private func refused(_ request: CredentialRequest, instance: String?, reason: String) {
        let now = scheduler.adapters.clock.now()
        let target = "credential '\(request.id)' for unit \(request.unit)"
        let lines = scheduler.credentialRefusals.withLock { $0.refused(uid: 0, pid: 0, target: target, now: now) }
        for line in lines where line.isFirst {
            var metadata: Logger.Metadata = ["unit": "\(request.unit)", "credential": "\(request.id)", "reason": "\(reason)"]
            if let instance { metadata["instance"] = "\(instance)" }
            logger.warning("credential refused", metadata: metadata)
        }
        scheduler.log(credentialRefusals: lines)
    }
}
