import NIOConcurrencyHelpers

/// Whether a listener got as far as `LISTEN`: ``wait()`` returns once it has, or throws why it could not.
///
/// After the start, a failure is no longer the caller's to catch: ``failed(_:)`` says so, and the listener reports it
/// through its `lost` callback instead.
final class PostgresListening: Sendable {
    private enum Phase {
        case starting(waiter: CheckedContinuation<Void, any Error>?)
        case started
        case failedToStart(any Error)
    }

    private let phase = NIOLockedValueBox(Phase.starting(waiter: nil))

    /// Whether `LISTEN` succeeded.
    var hasStarted: Bool {
        phase.withLockedValue { phase in
            if case .started = phase { return true }
            return false
        }
    }

    /// `LISTEN` succeeded: the waiter returns.
    func started() {
        let waiter = phase.withLockedValue { phase -> CheckedContinuation<Void, any Error>? in
            guard case .starting(let waiter) = phase else { return nil }
            phase = .started
            return waiter
        }
        waiter?.resume()
    }

    /// The listener ended with `error`: true if it had not started (the waiter throws it), false if it had.
    func failed(_ error: any Error) -> Bool {
        let outcome = phase.withLockedValue { phase -> (Bool, CheckedContinuation<Void, any Error>?) in
            guard case .starting(let waiter) = phase else { return (false, nil) }
            phase = .failedToStart(error)
            return (true, waiter)
        }
        outcome.1?.resume(throwing: error)
        return outcome.0
    }

    /// Returns when the listener has started; throws the error it failed with before that.
    func wait() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let ready = phase.withLockedValue { phase -> Result<Void, any Error>? in
                switch phase {
                case .starting:
                    phase = .starting(waiter: continuation)
                    return nil
                case .started: return .success(())
                case .failedToStart(let error): return .failure(error)
                }
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}
