/// What a loaded configuration changes in what runs, decided before anything is touched (SPEC §7): the reload is
/// validated first and then applied in one step on the scheduler queue.
public struct ReloadPlan: Sendable, Hashable {
    /// Running instances whose definition is gone (their file was deleted, not broken): stop, drop cache and sink.
    public var removed: [String] = []
    /// Names that do not run yet: start (from the cache when its fingerprint matches).
    public var added: [String] = []
    /// Running instances whose request changed (URL, auth, variables, secrets, …): a new token.
    public var changed: [String] = []
    /// Running instances whose request is the same: keep token and schedule, take the new sink, access and policy.
    public var unchanged: [String] = []
    /// Running instances whose file failed to load: keep running on the last good definition.
    public var kept: [String] = []

    public init() {}

    /// The plan from the running instances' request fingerprints and the names the new configuration defines (`loaded`,
    /// with the fingerprint of each) or failed to load (`failed`).
    ///
    /// Each list is sorted.
    public init(running: [String: String], loaded: [String: String], failed: Set<String>) {
        for (name, fingerprint) in loaded {
            switch running[name] {
            case nil: added.append(name)
            case fingerprint?: unchanged.append(name)
            case _?: changed.append(name)
            }
        }
        for name in running.keys where loaded[name] == nil {
            if failed.contains(name) { kept.append(name) } else { removed.append(name) }
        }
        removed.sort()
        added.sort()
        changed.sort()
        unchanged.sort()
        kept.sort()
    }

    /// The plan for a loaded configuration.
    public init(running: [String: String], loaded: ConfigLoader.Loaded) {
        self.init(
            running: running,
            loaded: loaded.instances.mapValues(\.fingerprint),
            failed: loaded.failedInstances
        )
    }

    /// The instances that start with a new state machine: new names and changed definitions, in name order.
    public var starting: [String] { (added + changed).sorted() }
}
