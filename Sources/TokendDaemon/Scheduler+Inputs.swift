import Foundation
import Logging
import TokendCore
import TokendIO

/// Value sources and chained instances (SPEC §11): inputs read before every fetch and watched in between, a refetch
/// when an input of the current token changes, dependents that wait for their input's token.
extension Scheduler {
    /// After a config was applied: who takes whose token, and which files to watch for whom.
    func inputsConfigured() {
        dependencies = DependencyGraph(instances.values.map(\.resolved.definition))
        var paths: [String: Set<String>] = [:]
        for (name, running) in instances where running.resolved.definition.hasLiveInputs {
            for (_, source) in running.resolved.definition.variables {
                if let path = adapters.inputs.path(of: source) { paths[path, default: []].insert(name) }
            }
        }
        inputPaths = paths
        unwatchedInputs = adapters.inputs.watch(Set(paths.keys)) { [weak self] path in self?.send(.inputChanged(path: path)) }
        // SPEC §11: a change is seen within 5 s; what inotify cannot watch is read that often.
        if unwatchedInputs.isEmpty {
            inputPollTimer?.cancel()
            inputPollTimer = nil
        } else if inputPollTimer == nil {
            logger.info("some input files cannot be watched; reading them every 5 s", metadata: ["files": "\(unwatchedInputs.count)"])
            let poll = timer(sending: .inputPollDue)
            poll.schedule(after: Self.inputPollInterval, repeating: Self.inputPollInterval, leeway: 0.5)
            inputPollTimer = poll
        }
    }

    /// How often input files that cannot be watched are read.
    static let inputPollInterval = 5.0

    /// The watch saw the file at `path` change: each instance that reads it reads it again and compares.
    func inputFileChanged(_ path: String) {
        guard !isStopping else { return }
        for name in (inputPaths[path] ?? []).sorted() {
            guard let running = instances[name] else { continue }
            readInputs(running)
            inputsMayHaveChanged(name)
        }
    }

    /// Reads the instance's file and credential values again: a new value replaces the one it fetches with; a file
    /// that cannot be read keeps its last good value and is reported (`input_unreadable`).
    func readInputs(_ running: RunningInstance) {
        let name = running.resolved.name
        var unreadable: [String: String] = [:]
        for (variable, source) in running.resolved.definition.variables {
            switch source {
            case .file, .credential:
                switch adapters.inputs.read(source) {
                case .success(let text):
                    if running.resolved.values[variable]?.revealed != text { running.resolved.values[variable] = Secret(text) }
                case .failure(let error):
                    unreadable[variable] = error.message
                }
            case .literal, .instance:
                continue
            }
        }
        guard unreadable != running.unreadable else { return }
        for (variable, message) in unreadable.sorted(by: { $0.key < $1.key }) where running.unreadable[variable] != message {
            logger.warning(
                "input unreadable; the last good value is kept",
                metadata: ["instance": "\(name)", "variable": "\(variable)", "error": "\(message)"]
            )
        }
        for variable in running.unreadable.keys.sorted() where unreadable[variable] == nil {
            logger.info("input readable again", metadata: ["instance": "\(name)", "variable": "\(variable)"])
        }
        running.unreadable = unreadable
        updateInputProblem(name)
    }

    /// The changing values the next fetch would use: file and credential values as last read, and each input
    /// instance's servable token; `missing` when an input instance has none; `bound` when the earliest input token
    /// stops being servable.
    func liveInputs(of running: RunningInstance, now: Date) -> (values: VariableMap<Secret>, missing: FetchFailure?, bound: Date?) {
        var values = VariableMap<Secret>()
        var bound: Date?
        for (variable, source) in running.resolved.definition.variables where source.isLive {
            guard case .instance(let input) = source else {
                if let value = running.resolved.values[variable] { values[variable] = value }
                continue
            }
            guard let token = instances[input]?.machine.servableToken(at: now) else {
                return (values, missingInput(of: running, now: now), nil)
            }
            values[variable] = token.accessToken
            bound = min(bound ?? token.serveUntil, token.serveUntil)
        }
        return (values, nil, bound)
    }

    /// Why the instance cannot fetch now: an input instance without a servable token (`dependency_failed`).
    func missingInput(of running: RunningInstance, now: Date) -> FetchFailure? {
        for (_, input) in running.resolved.definition.instanceInputs {
            guard let other = instances[input] else {
                return FetchFailure(kind: .transient, code: "dependency_failed", message: "input instance '\(input)' is not running")
            }
            guard other.machine.servableToken(at: now) == nil else { continue }
            let why = other.machine.reportedFailure.map { "\($0.code): \($0.message)" } ?? "no token yet"
            return FetchFailure(kind: .transient, code: "dependency_failed", message: "input instance '\(input)' has no token (\(why))")
        }
        return nil
    }

    /// A fetch that cannot start for want of an input's token: reported like a failed one, retried when the input
    /// gets a token.
    func inputMissing(_ name: String, _ failure: FetchFailure) {
        guard let running = instances[name] else { return }
        let now = adapters.clock.now()
        let inputsSettled = running.resolved.definition.instanceInputs.allSatisfy { instances[$0.instance]?.machine.hasSettled ?? true }
        logger.debug("waiting for an input's token", metadata: ["instance": "\(name)", "reason": "\(failure.message)"])
        perform(running.machine.inputMissing(failure, settles: inputsSettled, now: now, using: &random), for: name)
        settled(name)
    }

    /// `name`'s token or state changed: its dependents compare their inputs and report its trouble.
    func inputStateChanged(_ name: String) {
        for dependent in (dependencies.dependents[name] ?? []).sorted() {
            inputsMayHaveChanged(dependent)
        }
    }

    /// After an input may have changed: a token obtained with other input values is refetched (not before
    /// `min_interval`), as is an instance that has no token and whose last attempt used other values or lacked an
    /// input's token.
    func inputsMayHaveChanged(_ name: String) {
        guard !isStopping, let running = instances[name] else { return }
        let now = adapters.clock.now()
        updateInputProblem(name)
        guard running.resolved.definition.hasLiveInputs, !running.machine.isFetching else { return }
        let live = liveInputs(of: running, now: now)
        if let missing = live.missing {
            // An input that settled without a token settles the dependent still waiting for it.
            let inputsSettled = running.resolved.definition.instanceInputs.allSatisfy { instances[$0.instance]?.machine.hasSettled ?? true }
            if !running.machine.hasSettled, inputsSettled { inputMissing(name, missing) }
            return
        }
        let reference = running.machine.token != nil ? running.usedInputs : running.attemptedWith
        let differs = reference.map { $0 != live.values } ?? false
        let waitedForInput = running.machine.token == nil && running.machine.lastFailure?.code == "dependency_failed"
        guard differs || waitedForInput else { return }
        if differs {
            logger.info("an input changed; refetching", metadata: ["instance": "\(name)"])
        }
        perform(running.machine.inputChanged(now: now), for: name)
    }

    /// Sets the problem the instance reports from its unreadable files and its input instances: `input_unreadable`
    /// first, then `dependency_failed` while an input that has settled has no servable token or its last fetch
    /// failed.
    func updateInputProblem(_ name: String) {
        guard let running = instances[name] else { return }
        let now = adapters.clock.now()
        var problem: FetchFailure?
        if let (variable, message) = running.unreadable.min(by: { $0.key < $1.key }) {
            problem = FetchFailure(
                kind: .transient,
                code: "input_unreadable",
                message: "variable \(variable): \(message); the last good value is used"
            )
        } else {
            for (_, input) in running.resolved.definition.instanceInputs {
                guard let other = instances[input] else {
                    problem = FetchFailure(kind: .transient, code: "dependency_failed", message: "input instance '\(input)' is not running")
                    break
                }
                guard other.machine.hasSettled, other.machine.servableToken(at: now) == nil || other.machine.lastFailure != nil else {
                    continue
                }
                let why = other.machine.reportedFailure.map { "\($0.code): \($0.message)" } ?? "its token expired"
                problem = FetchFailure(kind: .transient, code: "dependency_failed", message: "input instance '\(input)': \(why)")
                break
            }
        }
        guard running.machine.inputProblem != problem else { return }
        running.machine.inputProblemChanged(problem)
        published.publish(name, running.state)
        scheduleStatusUpdate()
    }
}
