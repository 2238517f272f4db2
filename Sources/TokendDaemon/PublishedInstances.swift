import Synchronization
import TokendCore

/// The scheduler's view of every instance, published for the socket server: the scheduler queue writes it after
/// each change, request handlers read it under a short lock and never touch the scheduler's state.
final class PublishedInstances: InstanceDirectory {
    private let machines = Mutex<[String: InstanceStateMachine]>([:])

    func instance(named name: String) -> InstanceStateMachine? {
        machines.withLock { $0[name] }
    }

    func allInstances() -> [(name: String, machine: InstanceStateMachine)] {
        machines.withLock { $0.map { ($0.key, $0.value) } }
    }

    func publish(_ name: String, _ machine: InstanceStateMachine) {
        machines.withLock { $0[name] = machine }
    }

    func remove(_ name: String) {
        machines.withLock { _ = $0.removeValue(forKey: name) }
    }
}
