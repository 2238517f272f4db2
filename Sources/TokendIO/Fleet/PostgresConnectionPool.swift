import PostgresNIO

/// At most `maximum` connections to one database, opened when a call needs one and kept for the next.
///
/// PostgresNIO's `PostgresClient` pool retries a refused connection in the background with a backoff that grows to a
/// minute and fails waiting requests only after its circuit breaker trips; tokend wants each call to try once, fail
/// with the real reason within its deadline, and connect again on the next call. So this pool only counts: a caller
/// gets an idle connection or the right to open one (``Slot/open``), or waits for either.
actor PostgresConnectionPool {
    /// What ``acquire()`` hands out.
    enum Slot: Sendable {
        /// An open connection from an earlier call.
        case reuse(PostgresConnection)
        /// A free place: the caller opens a connection, and calls ``openFailed()`` if that fails.
        case open
    }

    /// The pool was closed by ``close()``.
    struct Closed: Error, CustomStringConvertible {
        var description: String { "the store is shut down" }
    }

    private let maximum: Int
    private var idle: [PostgresConnection] = []
    /// Idle, in use and being opened.
    private var counted = 0
    private var waiters: [(id: Int, continuation: CheckedContinuation<Slot, any Error>)] = []
    private var nextWaiter = 0
    private var isClosed = false

    init(maximum: Int) {
        self.maximum = max(1, maximum)
    }

    /// An idle connection, or a place to open one; waits (cancellably) while `maximum` are in use.
    func acquire() async throws -> Slot {
        if isClosed { throw Closed() }
        while let connection = idle.popLast() {
            if !connection.isClosed { return .reuse(connection) }
            counted -= 1
        }
        if counted < maximum {
            counted += 1
            return .open
        }
        let id = nextWaiter
        nextWaiter += 1
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                if Task.isCancelled {
                    continuation.resume(throwing: CancellationError())
                } else {
                    waiters.append((id, continuation))
                }
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
    }

    /// Takes back a connection: kept for the next caller when `reusable` and still open, else closed.
    func release(_ connection: PostgresConnection, reusable: Bool) {
        guard reusable, !isClosed, !connection.isClosed else {
            PostgresCall.close(connection)
            counted -= 1
            handOutFreedPlace()
            return
        }
        if waiters.isEmpty {
            idle.append(connection)
        } else {
            waiters.removeFirst().continuation.resume(returning: .reuse(connection))
        }
    }

    /// Gives back the place of a connection that could not be opened.
    func openFailed() {
        counted -= 1
        handOutFreedPlace()
    }

    /// Fails every waiter and closes the idle connections; later calls throw ``Closed``.
    func close() async {
        isClosed = true
        let waiting = waiters
        waiters.removeAll()
        for waiter in waiting {
            waiter.continuation.resume(throwing: Closed())
        }
        let closing = idle
        idle.removeAll()
        counted -= closing.count
        for connection in closing {
            try? await connection.close()
        }
    }

    private func handOutFreedPlace() {
        guard !isClosed, counted < maximum, !waiters.isEmpty else { return }
        counted += 1
        waiters.removeFirst().continuation.resume(returning: .open)
    }

    private func cancelWaiter(_ id: Int) {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return }
        waiters.remove(at: index).continuation.resume(throwing: CancellationError())
    }
}
