import NIOConcurrencyHelpers
import PostgresNIO

/// One store call's hold on its connection, so that a deadline (or shutdown) can end the call by closing it.
///
/// A query that the server never answers does not notice task cancellation; closing its connection fails it at once,
/// so a call that ran out of time leaves no task behind.
final class PostgresCall: Sendable {
    private struct State {
        var connection: PostgresConnection?
        var isExpired = false
    }

    private let state = NIOLockedValueBox(State())

    /// Whether ``expire()`` ran.
    var isExpired: Bool { state.withLockedValue { $0.isExpired } }

    /// Records the connection the call uses; false (and the connection is the caller's to drop) if it already expired.
    func use(_ connection: PostgresConnection) -> Bool {
        state.withLockedValue { state in
            guard !state.isExpired else { return false }
            state.connection = connection
            return true
        }
    }

    /// Marks the call as out of time and closes its connection, which fails whatever it waits for.
    func expire() {
        let connection = state.withLockedValue { state -> PostgresConnection? in
            state.isExpired = true
            return state.connection
        }
        if let connection { Self.close(connection) }
    }

    /// Closes `connection` without waiting, holding it until closed: PostgresNIO asserts that no connection is
    /// deinitialized while open.
    static func close(_ connection: PostgresConnection) {
        connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
    }
}
