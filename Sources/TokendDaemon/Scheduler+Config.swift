import Foundation
import Logging
import Synchronization
import TokendCore
import TokendIO

extension Scheduler {
    /// Applies a loaded configuration by its ``ReloadPlan``: new instances start, removed ones stop and lose their
    /// cache file and sink, changed ones refetch, unchanged ones keep their token and schedule, and instances of
    /// failed files keep running on their last good definition.
    func apply(_ loaded: ConfigLoader.Loaded, cached: [String: CacheLoadOutcome]) {
        let now = adapters.clock.now()
        let starting = !published.isLoaded
        for diagnostic in loaded.diagnostics {
            if diagnostic.severity == .error {
                logger.error("config error", metadata: ["error": "\(diagnostic)"])
            } else {
                logger.warning("config warning", metadata: ["warning": "\(diagnostic)"])
            }
        }
        configErrorCount = loaded.errors.count
        firstBrokenFile = loaded.errors.map(\.file).min().map(relativeToConfig)
        published.configErrors = loaded.errors.map(\.description)
        if var newSettings = loaded.settings {
            if !starting, newSettings.fleet != settings.fleet {
                logger.warning("[fleet] changed; the change takes effect when tokend restarts")
            }
            if !starting, newSettings.metrics != settings.metrics {
                logger.warning("[metrics] changed; the change takes effect when tokend restarts")
                newSettings.metrics = settings.metrics
            }
            settings = newSettings
            limiter.maxConcurrent = newSettings.refresh.maxConcurrent
            limiter.perEndpointConcurrent = newSettings.refresh.perEndpointConcurrent
            published.admin = adminPolicy(newSettings)
            updateSocketLimits(newSettings)
        }
        let plan = ReloadPlan(running: instances.mapValues(\.resolved.fingerprint), loaded: loaded)

        for name in plan.removed {
            stopInstance(name)
            logger.info("instance removed", metadata: ["instance": "\(name)"])
        }
        for name in plan.unchanged {
            guard let resolved = loaded.instances[name], let running = instances[name] else { continue }
            published.publishAccess(name, resolved.access)
            published.publishCredential(
                name,
                id: resolved.definition.credentialID ?? name,
                units: resolved.definition.access?.units ?? []
            )
            published.publishApplication(name, resolved.application)
            published.publishApplication(name, resolved.application)
            if running.resolved.sink != resolved.sink {
                if running.resolved.sink?.path != resolved.sink?.path { removeSink(running.resolved.sink) }
                if let token = running.machine.servableToken(at: now) { writeSink(name, token: token, to: resolved.sink) }
            }
            running.resolved = resolved
            // The reload read every input again: its values are the last good ones now.
            running.unreadable = [:]
            running.machine.configChanged(policy: policy(for: resolved))
            published.publish(name, running.state)
        }
        var startedFromCache = 0
        // Inputs start first: a dependent's first fetch then finds its input's fetch under way.
        let startOrder = DependencyGraph(plan.starting.compactMap { loaded.instances[$0]?.definition }).inputsFirst(plan.starting)
        for name in startOrder {
            guard let resolved = loaded.instances[name] else { continue }
            let replacing = instances[name] != nil
            var record: CacheRecord?
            switch cached[name] {
            case .loaded(let found)? where found.fingerprint == resolved.fingerprint && !replacing:
                record = found
                startedFromCache += 1
            case .movedAside(let reason)?:
                logger.warning("cache file moved aside", metadata: ["instance": "\(name)", "reason": "\(reason)"])
            default:
                break
            }
            if let old = instances[name] {
                removeSink(old.resolved.sink)
                cacheWriter.remove(name)
                limiter.withdraw(name)
            }
            startInstance(resolved, cached: record?.token, now: now)
            // At start-up one line sums them up instead of one line per instance.
            logger.log(
                level: starting ? .debug : .info,
                replacing ? "instance changed" : "instance added",
                metadata: ["instance": "\(name)", "cached_token": "\(record != nil)"]
            )
        }
        inputsConfigured()
        for name in plan.unchanged where instances[name]?.resolved.definition.hasLiveInputs == true {
            inputsMayHaveChanged(name)
        }
        // An input removed or replaced shows on its dependents.
        for name in dependencies.inputs.keys.sorted() { updateInputProblem(name) }
        fleetSync()
        if starting {
            logger.info("instances started", metadata: ["instances": "\(instances.count)", "cached_tokens": "\(startedFromCache)"])
        } else {
            endRevokedAccess()
        }
        updateStatus()
    }

    private func policy(for resolved: ResolvedInstance) -> RefreshPolicy {
        RefreshPolicy(settings.refresh.applying(resolved.definition.refresh))
    }

    private func startInstance(_ resolved: ResolvedInstance, cached: IssuedToken?, now: Date) {
        let name = resolved.definition.name
        lastGeneration += 1
        let running = RunningInstance(
            resolved: resolved,
            machine: InstanceStateMachine(policy: policy(for: resolved)),
            generation: lastGeneration
        )
        instances[name] = running
        published.publishAccess(name, resolved.access)
        published.publishCredential(
            name,
            id: resolved.definition.credentialID ?? name,
            units: resolved.definition.access?.units ?? []
        )
        published.publishApplication(name, resolved.application)
        let actions = running.machine.started(cached: cached, now: now, using: &random)
        readiness.started(name, settled: running.machine.hasSettled)
        perform(actions, for: name)
        if let token = running.machine.token {
            addExpiry(of: running)
            writeSink(name, token: token, to: resolved.sink)
        }
    }

    /// Stops a removed instance: its watchers end, its waiters get the answer for an unknown instance, its sink and
    /// cache file go.
    private func stopInstance(_ name: String) {
        guard let running = instances.removeValue(forKey: name) else { return }
        removeSink(running.resolved.sink)
        for watcher in watchers.take(name) { watcher.stream.finish() }
        published.remove(name)
        metrics.instanceRemoved(name)
        limiter.withdraw(name)
        readiness.settled(name)
        for waiter in waiters.take(name) { reply(waiter, router.unknownInstance(name)) }
        cacheWriter.remove(name)
    }

    /// `path` without the config directory in front (STATUS= is short).
    private func relativeToConfig(_ path: String) -> String {
        let directory = options.configDirectory.hasSuffix("/") ? options.configDirectory : options.configDirectory + "/"
        return options.configDirectory.isEmpty || !path.hasPrefix(directory) ? path : String(path.dropFirst(directory.count))
    }

    /// The waiters and watch streams of callers the current `[access]` rules (or the admin rule) no longer allow:
    /// refused and closed after a reload, as the request would be now.
    func endRevokedAccess() {
        var router = self.router
        router.admin = published.admin
        let now = adapters.clock.now()
        var refused: [RefusalLog.Line] = []
        func revoked(_ name: String, _ peer: PeerCredentials?) -> Bool {
            guard !router.mayRead(name, peer: peer, instances: published) else { return false }
            if let peer {
                refused += refusals.withLock { $0.refused(uid: peer.uid, pid: peer.pid, target: name, now: now) }
            }
            return true
        }
        for name in waiters.instances {
            for waiter in waiters.take(name, where: { revoked(name, $0.peer) }) { reply(waiter, router.unknownInstance(name)) }
        }
        for name in watchers.instances {
            for watcher in watchers.take(name, where: { revoked(name, $0.peer) }) { watcher.stream.finish() }
        }
        log(refusals: refused)
    }

    func adminPolicy(_ settings: DaemonSettings) -> AdminPolicy {
        let gid = settings.adminGroup.flatMap(adapters.resolveGroup)
        if let group = settings.adminGroup, gid == nil {
            logger.error(
                "admin_group names no group on this host; only root and the daemon's uid are admins",
                metadata: ["admin_group": "\(group)"]
            )
        }
        return AdminPolicy(daemonUID: options.daemonUID, adminGID: gid)
    }

    // MARK: - Reload

    /// SIGHUP: `RELOADING=1`, then the config is read on its own queue (a reload does not wait behind a backlog of
    /// cache writes) and the cache files of new names on the I/O queue (after any write of them).
    func reloadRequested() {
        guard !isStopping else { return }
        adapters.notifier.notify(.reloading(monotonicMicroseconds: adapters.clock.monotonicMicroseconds()))
        logger.info("reloading", metadata: ["config_dir": "\(options.configDirectory)"])
        let (config, cache) = (adapters.config, adapters.cache)
        // A running instance never takes its token from the cache file: only new names are looked up.
        let running = Set(instances.keys)
        configQueue.async { [self] in
            let outcome: Result<ConfigLoader.Loaded, ConfigDirectory.Unreadable>
            do throws(ConfigDirectory.Unreadable) {
                outcome = .success(try config.load())
            } catch {
                outcome = .failure(error)
            }
            ioQueue.async { [self] in
                var cached: [String: CacheLoadOutcome] = [:]
                if case .success(let loaded) = outcome {
                    for name in loaded.instances.keys where !running.contains(name) {
                        cached[name] = cache.load(instance: name)
                    }
                }
                send(.reloadLoaded(outcome, cached: cached))
            }
        }
    }

    func reloadLoaded(_ outcome: Result<ConfigLoader.Loaded, ConfigDirectory.Unreadable>, cached: [String: CacheLoadOutcome]) {
        guard !isStopping else { return }
        switch outcome {
        case .failure(let error):
            rejectedReload = error.description
            published.configErrors = ["reload rejected: \(error.description)"]
            logger.error("reload rejected", metadata: ["error": "\(error)"])
        case .success(let loaded) where loaded.settings == nil:
            for diagnostic in loaded.errors {
                logger.error("config error", metadata: ["error": "\(diagnostic)"])
            }
            rejectedReload = "tokend.toml is invalid"
            published.configErrors = ["reload rejected: tokend.toml is invalid"] + loaded.errors.map(\.description)
            logger.error("reload rejected", metadata: ["error": "tokend.toml is invalid; old settings kept"])
        case .success(let loaded):
            rejectedReload = nil
            apply(loaded, cached: cached)
            logger.info("reloaded", metadata: ["instances": "\(instances.count)", "errors": "\(loaded.errors.count)"])
            configQueue.async(execute: adapters.trimMemory)
        }
        notifyReady()
    }
}
