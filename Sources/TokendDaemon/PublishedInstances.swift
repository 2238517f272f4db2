import Foundation
import Synchronization
import TokendCore

/// The scheduler's view of every instance, published for the socket server: the scheduler queue writes it after
/// each change, request handlers read it under a short lock and never touch the scheduler's state.
final class PublishedInstances: InstanceDirectory {
    private let machines = Mutex<[String: PublishedMachine]>([:])
    private let policies = Mutex<[String: AccessPolicy]>([:])
    /// `[apply]` of the instances that have one (the others apply the token the default way).
    private let applications = Mutex<[String: TokenApplication]>([:])
    private let adminPolicy = Mutex<AdminPolicy?>(nil)
    private let errors = Mutex<[String]>([])
    private let loaded = Atomic<Bool>(false)
    private let ready = Atomic<Bool>(false)
    private let fleetState = Mutex<API.FleetBody?>(nil)
    private let fleetRoles = Mutex<[String: String]>([:])
    /// By credential id (`credential_id`, or the name): the instance and its `[access] units` (SPEC §10).
    private let credentials = Mutex<[String: CredentialGrant]>([:])

    /// Whether the first config has been published.
    ///
    /// A socket systemd passed may deliver requests before that.
    var isLoaded: Bool {
        get { loaded.load(ordering: .acquiring) }
        set { loaded.store(newValue, ordering: .releasing) }
    }

    /// Whether READY=1 went out.
    ///
    /// Until then a request for an instance without a first token waits for it.
    var isReady: Bool {
        get { ready.load(ordering: .acquiring) }
        set { ready.store(newValue, ordering: .releasing) }
    }

    func access(named name: String) -> AccessPolicy? {
        policies.withLock { $0[name] }
    }

    var configErrors: [String] {
        get { errors.withLock { $0 } }
        set { errors.withLock { $0 = newValue } }
    }

    /// How this host stands with the fleet; nil without `[fleet]`.
    var fleet: API.FleetBody? {
        get { fleetState.withLock { $0 } }
        set { fleetState.withLock { $0 = newValue } }
    }

    func fleetRole(named name: String) -> String? {
        fleetRoles.withLock { $0[name] }
    }

    /// Where `name`'s token came from in the fleet (nil: forget it).
    func publishFleetRole(_ name: String, _ role: String?) {
        fleetRoles.withLock { $0[name] = role }
    }

    var admin: AdminPolicy? {
        get { adminPolicy.withLock { $0 } }
        set { adminPolicy.withLock { $0 = newValue } }
    }

    func publishAccess(_ name: String, _ policy: AccessPolicy?) {
        policies.withLock { $0[name] = policy }
    }

    /// The instance systemd units load as credential `id`, and the units that may.
    func credential(id: String) -> CredentialGrant? {
        credentials.withLock { $0[id] }
    }

    /// `name` is loaded as credential `id` by `units` from now on.
    func publishCredential(_ name: String, id: String, units: [String]) {
        credentials.withLock { table in
            table = table.filter { $0.value.instance != name }
            table[id] = CredentialGrant(instance: name, units: units)
        }
    }

    func application(named name: String) -> TokenApplication? {
        applications.withLock { $0[name] }
    }

    func publishApplication(_ name: String, _ application: TokenApplication) {
        applications.withLock { $0[name] = application == .standard ? nil : application }
    }

    func instance(named name: String) -> InstanceStateMachine? {
        machines.withLock { $0[name]?.machine }
    }

    /// The published box itself (its state and the answers made from its token).
    func published(named name: String) -> PublishedMachine? {
        machines.withLock { $0[name] }
    }

    func contains(_ name: String) -> Bool {
        machines.withLock { $0[name] != nil }
    }

    func allInstances() -> [(name: String, machine: InstanceStateMachine)] {
        machines.withLock { $0.map { ($0.key, $0.value.machine) } }
    }

    func publish(_ name: String, _ machine: PublishedMachine) {
        machines.withLock { $0[name] = machine }
    }

    func remove(_ name: String) {
        machines.withLock { _ = $0.removeValue(forKey: name) }
        policies.withLock { _ = $0.removeValue(forKey: name) }
        applications.withLock { _ = $0.removeValue(forKey: name) }
        credentials.withLock { table in table = table.filter { $0.value.instance != name } }
    }
}

/// An instance as credentials.sock sees it: its name and the units that may load its token.
struct CredentialGrant: Sendable, Hashable {
    var instance: String
    var units: [String]
}

/// One instance's state as published: never changed, shared by the scheduler's running instance and the snapshot.
final class PublishedMachine: Sendable {
    let machine: InstanceStateMachine
    /// The token answers made from this state (it never changes, so neither does its token): callers asking many
    /// times a second share one body.
    private let answers = Mutex(TokenAnswers())

    init(_ machine: InstanceStateMachine) {
        self.machine = machine
    }

    /// The 200 answer in `format` carrying `token` (this state's servable token) at `now`, applied as `application`
    /// says (nil: the default).
    func tokenAnswer(
        name: String,
        token: IssuedToken,
        format: TokenFormat,
        now: Date,
        router: APIRouter,
        application: TokenApplication? = nil
    ) -> APIResponse {
        answers.withLock { $0.answer(name: name, token: token, format: format, now: now, router: router, application: application) }
    }
}
