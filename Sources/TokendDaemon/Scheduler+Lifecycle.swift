import Foundation
import Logging
import Synchronization
import TokendCore
import TokendIO

extension Scheduler {
    // MARK: - Readiness

    /// Sends READY=1 once ``Readiness`` says so; start-up callers still waiting for a first token then get their 503.
    func becomeReady(startupTimedOut: Bool) {
        guard !isStopping, readiness.becomesReady(startupTimedOut: startupTimedOut) else { return }
        published.isReady = true
        extensionTimer?.cancel()
        extensionTimer = nil
        // The start-up's responses, request buffers and parse trees are freed by now: their pages go back before
        // READY=1, so that a ready daemon's RSS is its working set.
        let trimStart = adapters.clock.monotonicMicroseconds()
        adapters.trimMemory()
        startupSteps.append(("trim", Int((adapters.clock.monotonicMicroseconds() - trimStart) / 1000)))
        notifyReady()
        for name in waiters.instances where instances[name]?.machine.token == nil {
            let lastError = instances[name]?.machine.reportedFailure
            let message = lastError.map { "no valid token: \($0.message)" } ?? "no valid token yet"
            for waiter in waiters.take(name, where: { $0.minValid == 0 }) {
                reply(waiter, router.unavailable(name: name, message: message, lastError: lastError?.code, retryAfter: 1))
            }
        }
    }

    /// READY=1 with the status line, after start-up (logged with how long each step took) and after a reload.
    func notifyReady() {
        lastStatus = statusLine()
        adapters.notifier.notify(.ready, .status(lastStatus))
        logger.info(
            "ready",
            metadata: Logger.Metadata(
                uniqueKeysWithValues: [("status", .string(lastStatus))]
                    + startupSteps.map { ("\($0.step)_ms", .string("\($0.milliseconds)")) }
            )
        )
        startupSteps = []
    }

    // MARK: - STATUS=

    func statusLine() -> String {
        let now = adapters.clock.now()
        let entries = instances.map { name, running in
            StatusSummary.Entry(name: name, state: running.machine.state(at: now), errorCode: running.machine.reportedFailure?.code)
        }
        return StatusSummary.line(
            entries,
            configErrors: configErrorCount,
            firstBrokenFile: firstBrokenFile,
            rejectedReload: rejectedReload,
            fleet: adapters.fleet == nil ? nil : fleetHealth.summary
        )
    }

    /// Coalesces status updates: with thousands of instances finishing fetches, STATUS= is recomputed (O(n)) at most
    /// ten times a second.
    func scheduleStatusUpdate() {
        guard statusTimer == nil else { return }
        statusTimer = adapters.clock.after(0.1, on: queue) { [unowned self] in self.handle(.statusDue) }
    }

    func updateStatus() {
        let line = statusLine()
        guard line != lastStatus else { return }
        lastStatus = line
        adapters.notifier.notify(.status(line))
    }

    // MARK: - Refusals

    /// Logs refused requests: a window's first refusal of a caller as it happens, the rest summed up per caller.
    func log(refusals lines: [RefusalLog.Line]) {
        for line in lines {
            var metadata: Logger.Metadata = [
                "peer.uid": "\(line.uid)",
                "peer.pid": "\(line.pid)",
                "refused": "\(line.targets.joined(separator: ","))\(line.moreTargets ? ",…" : "")",
            ]
            if line.isFirst {
                logger.warning("request refused", metadata: metadata)
            } else {
                metadata["count"] = "\(line.count)"
                metadata["window_s"] = "\(Int(refusals.withLock { $0.window }))"
                logger.warning("more requests refused", metadata: metadata)
            }
        }
    }

    /// The summaries of the refusal windows that ended.
    func logRefusalSummaries() {
        let now = adapters.clock.now()
        log(refusals: refusals.withLock { $0.due(now: now) })
        log(credentialRefusals: credentialRefusals.withLock { $0.due(now: now) })
    }

    /// The summaries of refused credentials.sock connections (the first of each window is logged when refused).
    func log(credentialRefusals lines: [RefusalLog.Line]) {
        for line in lines where !line.isFirst {
            logger.warning(
                "more credentials refused",
                metadata: [
                    "count": "\(line.count)",
                    "refused": "\(line.targets.joined(separator: ", "))\(line.moreTargets ? ", …" : "")",
                    "window_s": "\(Int(credentialRefusals.withLock { $0.window }))",
                ]
            )
        }
    }

    // MARK: - Clock steps

    /// Compares the wall clock's progress with the boot clock's (which also counts suspend): a step moves every
    /// instance's times with it; a suspend needs nothing, since overdue wake-ups fire at once.
    func checkClock() {
        let wall = adapters.clock.now()
        let boot = adapters.clock.bootSeconds()
        defer { lastClockReading = (wall, boot) }
        guard let last = lastClockReading else { return }
        let step = wall.timeIntervalSince(last.wall) - (boot - last.boot)
        guard abs(step) > 2 else { return }
        logger.warning("wall clock stepped; rescheduling every instance", metadata: ["step_s": "\(Int(step))"])
        for name in instances.keys.sorted() {
            guard let running = instances[name] else { continue }
            perform(running.machine.clockStepped(by: step), for: name)
            addExpiry(of: running)
        }
        arm()
    }

    // MARK: - Stopping

    /// SIGTERM or SIGINT: STOPPING=1; no more timers, waiters answered, streams ended; then the socket closes, the
    /// token client stops and the cache writes are flushed before the daemon reports its exit status.
    ///
    /// A drain that hangs for 10 s ends the daemon anyway, so that the unit never stays in "deactivating".
    func stopRequested(signal: String) {
        guard !isStopping else { return }
        isStopping = true
        adapters.notifier.notify(.stopping, .status("stopping"))
        logger.info("stopping", metadata: ["signal": "\(signal)"])
        timer?.cancel()
        statusTimer?.cancel()
        extensionTimer?.cancel()
        for repeating in repeatingTimers { repeating.cancel() }
        for waiter in waiters.takeAll() { reply(waiter, stoppingAnswer()) }
        for watcher in watchers.takeAll() { watcher.stream.finish() }
        adapters.inputs.stop()
        inputPollTimer?.cancel()
        log(refusals: refusals.withLock { $0.flush() })
        log(credentialRefusals: credentialRefusals.withLock { $0.flush() })
        // Kept: a timer nobody holds may be cancelled with its last reference.
        repeatingTimers = [
            adapters.clock.after(10, on: queue) { [unowned self] in
                self.logger.warning("shutdown took longer than 10 s; exiting")
                self.finishStopping()
            }
        ]
        let (closeServer, endpoint, cacheWriter, fleet) = (closeServer, adapters.endpoint, cacheWriter, adapters.fleet)
        fleetReconnectTimer?.cancel()
        Task {
            await closeServer()
            await endpoint.shutdown()
            await fleet?.store.shutdown()
            cacheWriter.flush()
            self.queue.async { self.finishStopping() }
        }
    }

    private func finishStopping() {
        guard !hasStopped else { return }
        hasStopped = true
        logger.info("stopped")
        onStopped(0)
    }

    /// Stops the daemon and waits until it has stopped; returns the exit status.
    public func stop(signal: String = "SIGTERM") async -> Int32 {
        await withCheckedContinuation { continuation in
            queue.async {
                let previous = self.onStopped
                self.onStopped = { status in
                    previous(status)
                    continuation.resume(returning: status)
                }
                self.handle(.stopRequested(signal: signal))
            }
        }
    }
}
