import DequeModule
import Foundation
import Logging
import Synchronization
import TokendCore
import TokendIO

/// Fleet mode (SPEC §14, docs/fleet.md): how a shared instance gets its token, on the scheduler queue.
extension Scheduler {
    /// Whether `name` shares its token through the fleet now.
    func fleetShares(_ name: String) -> Bool {
        guard adapters.fleet != nil, fleetHealth == .connected, let running = instances[name] else { return false }
        return running.resolved.definition.shared
    }

    /// The member for `name`, made (or remade, after its request changed) from the running instance.
    func fleetMember(_ name: String) -> FleetMember? {
        guard let fleet = adapters.fleet, let running = instances[name], running.resolved.definition.shared else { return nil }
        let fingerprint = running.resolved.fingerprint
        if let member = fleetMembers[name], member.fingerprint == fingerprint { return member }
        if let old = fleetMembers[name] { fleetNames[old.identity] = nil }
        let member = FleetMember(identity: fleet.codec.identity(instance: name, fingerprint: fingerprint), fingerprint: fingerprint)
        fleetMembers[name] = member
        fleetNames[member.identity] = name
        return member
    }

    /// After a load: every shared instance has its member (a notification names a row, not an instance), and the
    /// members of removed instances go.
    func fleetSync() {
        guard adapters.fleet != nil else { return }
        for name in fleetMembers.keys where instances[name]?.resolved.definition.shared != true {
            if let member = fleetMembers.removeValue(forKey: name) {
                fleetNames[member.identity] = nil
                member.waitTimer?.cancel()
                published.publishFleetRole(name, nil)
            }
        }
        for (name, running) in instances {
            if running.resolved.definition.shared {
                _ = fleetMember(name)
            } else {
                published.publishFleetRole(name, "not shared")
            }
        }
    }

    /// The instance needs a token: read its row, then adopt the row's token or take the lease and fetch.
    func fleetFetch(_ name: String) {
        guard var member = fleetMember(name) else { return startFetch(name) }
        if member.phase != .deciding && member.phase != .waiting, let running = instances[name] {
            // A new need: the fleet has until the patience runs out, then this host fetches alone.
            member.need += 1
            member.patienceTimer?.cancel()
            member.patienceTimer = nil
            let now = adapters.clock.now()
            if let until = FleetDecision.patience(current: running.machine.servableToken(at: now), now: now) {
                let need = member.need
                member.patienceTimer = adapters.clock.after(until.timeIntervalSince(now), on: queue) { [unowned self] in
                    self.handle(.fleet(.patienceOver(name: name, need: need)))
                }
            }
        }
        member.ticket += 1
        member.heardWrite = false
        member.phase = .deciding
        member.waitTimer?.cancel()
        member.waitTimer = nil
        fleetMembers[name] = member
        fleetRead(name, member: member, notified: false)
    }

    /// Queues a read of the member's row: the reads asked for while handling one event (a start-up's thousand
    /// instances, a reload's new ones) go to the store together, a few hundred rows per query.
    private func fleetRead(_ name: String, member: FleetMember, notified: Bool) {
        fleetReads.append(FleetReadRequest(name: name, ticket: member.ticket, notified: notified, identity: member.identity))
        guard fleetReads.count == 1 else { return }
        queue.async { [self] in flushFleetReads() }
    }

    private func flushFleetReads() {
        guard let fleet = adapters.fleet, !fleetReads.isEmpty else { return }
        let requests = fleetReads
        fleetReads = []
        var start = 0
        while start < requests.count {
            let batch = Array(requests[start..<min(start + Self.fleetReadBatch, requests.count)])
            start += batch.count
            fleetOperation {
                do {
                    return .readMany(batch, .success(try await fleet.store.read(batch.map(\.identity))))
                } catch {
                    return .readMany(batch, .failure(FleetStoreError(error)))
                }
            }
        }
    }

    /// Rows read with one query.
    static let fleetReadBatch = 250
    /// Store calls in flight at once (the store's pool has 4 connections); the others wait their turn here, so a
    /// start-up's thousands of calls never wait out their timeouts in the store's queue.
    static let fleetConcurrency = 8

    /// Runs a store call off the queue and hands its answer back as an event, at most ``fleetConcurrency`` at once.
    func fleetOperation(_ body: @escaping @Sendable () async -> FleetEvent) {
        guard fleetActive < Self.fleetConcurrency else {
            fleetWaiting.append(body)
            return
        }
        fleetActive += 1
        fleetInFlight.add(1, ordering: .relaxed)
        fleetStarted.add(1, ordering: .releasing)
        let (clock, metrics) = (adapters.clock, metrics)
        Task(executorPreference: fleetExecutor) {
            let started = clock.monotonicMicroseconds()
            let event = await body()
            metrics.fleetCall(seconds: Double(clock.monotonicMicroseconds() - started) / 1_000_000)
            self.send(.fleet(.operationEnded(event)))
            self.fleetInFlight.subtract(1, ordering: .releasing)
        }
    }

    /// A store call ended: the next waiting one starts, then its answer is handled.
    private func fleetOperationEnded(_ event: FleetEvent) {
        fleetActive -= 1
        if let next = fleetWaiting.popFirst() { fleetOperation(next) }
        handleFleet(event)
    }

    func handleFleet(_ event: FleetEvent) {
        if case .operationEnded(let inner) = event { return fleetOperationEnded(inner) }
        guard !isStopping else { return }
        if case .readMany(let requests, let result) = event {
            for request in requests {
                let row = result.map { rows in rows.first { $0.identity == request.identity } }
                handleFleet(.read(name: request.name, ticket: request.ticket, result: row, notified: request.notified))
            }
            return
        }
        // A failure says the database is unreachable even when its answer came too late to matter to the step.
        switch event {
        case .read(let name, let ticket, .failure(let error), _), .published(let name, let ticket, .failure(let error)),
            .leased(let name, let ticket, _, .failure(let error)):
            if fleetMembers[name]?.ticket != ticket { return fleetFailed(error, alone: nil) }
        default: break
        }
        switch event {
        case .read(let name, let ticket, let result, let notified):
            guard var member = fleetMembers[name], member.ticket == ticket else { return }
            switch result {
            case .failure(let error):
                fleetFailed(error, alone: member.phase == .deciding || member.phase == .waiting ? name : nil)
            case .success(let row):
                if notified && member.phase == .idle {
                    adoptNotified(name, row: row)
                } else if member.phase == .deciding || member.phase == .waiting {
                    member.phase = .deciding
                    fleetMembers[name] = member
                    decide(name, row: row.map { view(of: $0, member: member) })
                }
            }
        case .leased(let name, let ticket, let expected, let result):
            guard let member = fleetMembers[name], member.ticket == ticket, member.phase == .deciding else { return }
            switch result {
            case .failure(let error): fleetFailed(error, alone: name)
            case .success(.granted(let generation)): leaseGranted(name, generation: generation)
            case .success(.refused(let row)): leaseRefused(name, row: row, expected: expected)
            }
        case .published(let name, let ticket, let result):
            guard var member = fleetMembers[name], member.ticket == ticket else { return }
            if case .success(.some) = result {} else { member.ownWrites = max(0, member.ownWrites - 1) }
            fleetMembers[name] = member
            switch result {
            case .failure(let error): fleetFailed(error, alone: nil)
            case .success(let generation?):
                member.generation = generation
                fleetMembers[name] = member
                published.publishFleetRole(name, "fetched here")
            case .success(nil):
                logger.warning("fleet lease lost before the token was written; served here only", metadata: ["instance": "\(name)"])
            }
        case .patienceOver(let name, let need):
            guard var member = fleetMembers[name], member.need == need, member.phase == .deciding || member.phase == .waiting
            else { return }
            logger.warning("the fleet did not answer in time; fetching alone", metadata: ["instance": "\(name)"])
            member.ticket += 1
            member.waitTimer?.cancel()
            member.waitTimer = nil
            member.patienceTimer = nil
            member.phase = .alone
            answerInvalidations(&member, replaced: false)
            fleetMembers[name] = member
            startFetch(name)
        case .waitOver(let name, let ticket):
            guard let member = fleetMembers[name], member.ticket == ticket, member.phase == .waiting else { return }
            fleetFetch(name)
        case .changed(let identity):
            guard let name = fleetNames[identity], var member = fleetMembers[name] else { return }
            if member.ownWrites > 0 {
                // This host's own write, heard back from the database: nothing new.
                member.ownWrites -= 1
                fleetMembers[name] = member
                return
            }
            switch member.phase {
            case .idle: fleetRead(name, member: member, notified: true)
            case .waiting: fleetFetch(name)
            case .deciding:
                // The answer on its way may predate this write: a refused lease then reads again at once.
                member.heardWrite = true
                fleetMembers[name] = member
            case .leased, .alone: break
            }
        case .lost(let error):
            fleetListening = false
            fleetFailed(error, alone: nil)
        case .reconnectDue:
            fleetReconnectTimer = nil
            openFleet()
        case .opened(let result, let listening):
            if listening { fleetListening = true }
            fleetOpened(result)
        case .readMany, .operationEnded:
            break  // Handled above.
        }
    }

    /// The row as this host sees it: the token only if it opens with this host's key for this request.
    private func view(of row: FleetRow, member: FleetMember) -> FleetDecision.RowView {
        guard let fleet = adapters.fleet, let sealed = row.sealed else {
            return .init(generation: row.generation, token: nil, fetchedBy: row.fetchedBy)
        }
        let token = fleet.codec.open(sealed, identity: member.identity, fingerprint: member.fingerprint)
        if token == nil {
            metrics.fleetRowRefused()
            logger.error(
                "fleet row does not open with this host's key; not used",
                metadata: ["instance": "\(fleetNames[member.identity] ?? "")", "generation": "\(row.generation)"]
            )
        }
        return .init(generation: row.generation, token: token, fetchedBy: row.fetchedBy)
    }

    private func decide(_ name: String, row: FleetDecision.RowView?) {
        guard let fleet = adapters.fleet, let member = fleetMembers[name], let running = instances[name] else { return }
        let now = adapters.clock.now()
        let step = FleetDecision.step(
            row: row,
            current: running.machine.servableToken(at: now),
            invalidated: member.invalidated,
            policy: running.machine.policy,
            now: now
        )
        switch step {
        case .adopt(let token, let generation):
            adopt(name, token: token, generation: generation, from: row?.fetchedBy)
        case .lease(let expected):
            let (identity, ticket, holder, seconds) = (member.identity, member.ticket, fleet.hostID, settings.fleet?.lease ?? 20)
            fleetOperation {
                let result: Result<FleetLease, FleetStoreError>
                do {
                    result = .success(try await fleet.store.lease(identity, holder: holder, expecting: expected, for: seconds))
                } catch {
                    result = .failure(FleetStoreError(error))
                }
                return .leased(name: name, ticket: ticket, expected: expected, result: result)
            }
        }
    }

    private func leaseGranted(_ name: String, generation: Int64) {
        guard var member = fleetMembers[name] else { return }
        member.phase = .leased(generation)
        answerInvalidations(&member, replaced: false)
        fleetMembers[name] = member
        logger.debug("fleet lease taken", metadata: ["instance": "\(name)", "generation": "\(generation)"])
        startFetch(name)
    }

    private func leaseRefused(_ name: String, row: FleetRow, expected: Int64) {
        guard var member = fleetMembers[name], let running = instances[name] else { return }
        let now = adapters.clock.now()
        let outcome = FleetDecision.afterRefusal(
            row: view(of: row, member: member),
            expected: expected,
            leaseLeft: row.leaseLeft,
            current: running.machine.servableToken(at: now),
            now: now
        )
        switch outcome {
        case .decideAgain(let moved):
            decide(name, row: moved)
        case .wait where member.heardWrite:
            // The holder wrote while this host was asking: read the row again instead of waiting out the lease.
            fleetFetch(name)
        case .wait(let until):
            member.phase = .waiting
            let ticket = member.ticket
            member.waitTimer = adapters.clock.after(until.timeIntervalSince(now), on: queue) { [unowned self] in
                self.handle(.fleet(.waitOver(name: name, ticket: ticket)))
            }
            fleetMembers[name] = member
            published.publishFleetRole(name, "waiting for \(row.leaseHolder ?? "another host")")
            logger.debug("fleet lease held elsewhere; waiting", metadata: ["instance": "\(name)", "holder": "\(row.leaseHolder ?? "")"])
        case .fetchAlone:
            member.phase = .alone
            answerInvalidations(&member, replaced: false)
            fleetMembers[name] = member
            startFetch(name)
        }
    }

    /// Takes another host's token: stored, then served, like one fetched here.
    private func adopt(_ name: String, token: IssuedToken, generation: Int64, from host: String?) {
        guard var member = fleetMembers[name], let running = instances[name] else { return }
        member.phase = .idle
        member.generation = generation
        member.invalidated = nil
        answerInvalidations(&member, replaced: true)
        fleetMembers[name] = member
        metrics.fleetShared(instance: name)
        published.publishFleetRole(name, "from \(host ?? "another host")")
        logger.info(
            "token taken from the fleet",
            metadata: ["instance": "\(name)", "token": "\(token.fingerprint)", "generation": "\(generation)"]
        )
        perform(running.machine.tokenReceived(token), for: name)
    }

    /// Another host wrote the row: its token replaces this host's if it is a later generation.
    private func adoptNotified(_ name: String, row: FleetRow?) {
        guard let row, let member = fleetMembers[name], let running = instances[name] else { return }
        let now = adapters.clock.now()
        let current = running.machine.token ?? running.machine.pendingToken
        if let token = FleetDecision.adoptsNotified(
            row: view(of: row, member: member),
            localGeneration: member.generation,
            current: current,
            now: now
        ) {
            adopt(name, token: token, generation: row.generation, from: row.fetchedBy)
        }
    }

    private func answerInvalidations(_ member: inout FleetMember, replaced: Bool) {
        let replies = member.invalidationReplies
        member.invalidationReplies = []
        if !replaced { member.invalidated = nil }
        guard !replies.isEmpty, let name = fleetNames[member.identity] else { return }
        let response =
            replaced
            ? router.json(200, API.CommandBody(instance: name, accepted: false, message: "another host already replaced this token"))
            : router.json(202, API.CommandBody(instance: name, accepted: true, message: "token dropped; refreshing"))
        for reply in replies { reply(response) }
    }

    /// A fetch this host made ended: a token fetched under the lease is written to the row for the others.
    func fleetFetchFinished(_ name: String, token: IssuedToken?) {
        guard let fleet = adapters.fleet, var member = fleetMembers[name] else { return }
        let phase = member.phase
        member.phase = .idle
        member.invalidated = nil
        answerInvalidations(&member, replaced: false)
        guard case .leased(let generation) = phase else {
            if token != nil {
                member.generation = nil
                published.publishFleetRole(name, "alone")
            }
            fleetMembers[name] = member
            return
        }
        fleetMembers[name] = member
        let (identity, ticket, holder) = (member.identity, member.ticket, fleet.hostID)
        guard let token else {
            fleetOperation {
                do {
                    try await fleet.store.release(identity, holder: holder)
                    return .published(name: name, ticket: -1, result: .success(nil))
                } catch {
                    return .published(name: name, ticket: ticket, result: .failure(FleetStoreError(error)))
                }
            }
            return
        }
        let sealed = fleet.codec.seal(token, identity: identity, fingerprint: member.fingerprint)
        member.ownWrites += 1
        fleetMembers[name] = member
        metrics.fleetFetched(instance: name)
        fleetOperation {
            let result: Result<Int64?, FleetStoreError>
            do {
                result = .success(
                    try await fleet.store.publish(
                        identity,
                        holder: holder,
                        generation: generation,
                        sealed: sealed,
                        obtainedAt: token.obtainedAt,
                        expiresAt: token.expiresAt
                    )
                )
            } catch {
                result = .failure(FleetStoreError(error))
            }
            return .published(name: name, ticket: ticket, result: result)
        }
    }

    /// A store call failed: the fleet is unreachable until it opens again; `alone` (an instance waiting on the
    /// fleet) fetches on its own now.
    private func fleetFailed(_ error: FleetStoreError, alone name: String?) {
        metrics.fleetError()
        if fleetHealth == .connected || fleetHealth == .connecting {
            logger.error("fleet database unreachable; refreshing on our own", metadata: ["error": "\(error)"])
        }
        setFleetHealth(.unreachable(error.description))
        // Every member waiting on the fleet goes on alone.
        for (member, var state) in fleetMembers where state.phase == .deciding || state.phase == .waiting || member == name {
            state.ticket += 1
            state.waitTimer?.cancel()
            state.waitTimer = nil
            state.phase = .alone
            answerInvalidations(&state, replaced: false)
            fleetMembers[member] = state
            startFetch(member)
        }
        scheduleFleetReconnect()
    }

    private func scheduleFleetReconnect() {
        guard fleetReconnectTimer == nil, !isStopping else { return }
        fleetReconnectTimer = adapters.clock.after(10, on: queue) { [unowned self] in self.handle(.fleet(.reconnectDue)) }
    }

    func setFleetHealth(_ health: FleetHealth) {
        guard fleetHealth != health else { return }
        fleetHealth = health
        published.fleet = API.FleetBody(state: health.state, error: health.error, host_id: adapters.fleet?.hostID ?? "")
        metrics.fleetHealth(health == .connected)
        scheduleStatusUpdate()
    }

    /// Opens the store and listens for the other hosts' writes (every 10 s while unreachable).
    func openFleet() {
        guard let fleet = adapters.fleet else { return }
        // A listener that outlived a slow database still listens: one per host, not one more per outage.
        let listen = !fleetListening
        fleetOperation { [weak self] in await Self.open(fleet, listen: listen, reportingTo: self) }
    }

    /// At start, before the instances: opens the store (bounded by the store's own timeout), so that an instance
    /// that starts without a token takes the fleet's instead of asking the provider.
    public func connectFleet() async {
        guard let fleet = adapters.fleet else { return }
        let event = await Self.open(fleet, listen: true, reportingTo: self)
        queue.sync { handleFleet(event) }
    }

    private static func open(_ fleet: FleetAdapter, listen: Bool, reportingTo scheduler: Scheduler?) async -> FleetEvent {
        do {
            let opening = try await fleet.store.open(keyCheck: fleet.codec.keyCheck)
            if opening == .ready, listen {
                try await fleet.store.listen(
                    changed: { [weak scheduler] identity in scheduler?.send(.fleet(.changed(identity))) },
                    lost: { [weak scheduler] error in scheduler?.send(.fleet(.lost(FleetStoreError(error)))) }
                )
            }
            return .opened(.success(opening), listening: opening == .ready && listen)
        } catch {
            return .opened(.failure(FleetStoreError(error)), listening: false)
        }
    }

    private func fleetOpened(_ result: Result<FleetOpening, FleetStoreError>) {
        switch result {
        case .success(.ready):
            if fleetHealth != .connected {
                logger.info("fleet database connected; sharing tokens", metadata: ["host_id": "\(adapters.fleet?.hostID ?? "")"])
            }
            setFleetHealth(.connected)
        case .success(.keyMismatch):
            logger.error("fleet key mismatch: this host's key is not the fleet's; refreshing on our own")
            setFleetHealth(.keyMismatch)
        case .success(.schemaTooNew(let found, let known)):
            logger.error(
                "fleet table is newer than this tokend; refreshing on our own",
                metadata: ["found": "\(found)", "known": "\(known)"]
            )
            setFleetHealth(.schemaTooNew)
        case .failure(let error):
            fleetFailed(error, alone: nil)
        }
    }
}
