import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import TokendCore

/// The fleet's shared rows in PostgreSQL (SPEC §14): one table, leases judged by the database's clock, LISTEN/NOTIFY.
///
/// Every call is bounded by the operation timeout (2 s by default): one that the database does not answer in time
/// throws ``PostgresFleetError`` and closes its connection, so a slow or vanished database never holds the daemon.
/// Connections are opened when a call needs one (at most `maximumConnections`) and kept for the next; a call after a
/// failure simply connects again. ``listen(changed:lost:)`` has a connection of its own.
///
/// Errors name the database (``FleetDatabase/displayName``) and the operation; they never hold the password.
public final class PostgresFleetStore: FleetStore {
    /// Seconds a call may take before it fails.
    public static let defaultTimeout: Double = 2

    private let database: FleetDatabase
    private let password: String?
    private let configuration: PostgresConnection.Configuration
    private let logger: Logger
    private let timeout: Double
    private let eventLoopGroup: any EventLoopGroup
    private let pool: PostgresConnectionPool
    private let state = NIOLockedValueBox(State())

    private struct State {
        var nextConnectionID = 0
        var nextCallID = 0
        /// Calls and listeners in progress: how to end each one, and how to wait until it has.
        var running: [Int: (call: PostgresCall, end: @Sendable () async -> Void, cancel: @Sendable () -> Void)] = [:]
        var isShutDown = false
    }

    /// A store for `database`; nothing connects until the first call.
    ///
    /// - Parameters:
    ///   - database: Where the database is, the user, and the TLS mode (`verify-ca`/`verify-full` check the server's
    ///     certificate against `caFile`, or the system's roots without one; `require` checks nothing).
    ///   - password: The user's password; nil for none (a trusted Unix socket).
    ///   - caFile: PEM certificates that verify the server.
    ///   - logger: Where PostgresNIO's connection events go.
    ///   - timeout: Seconds each call may take, connecting included.
    ///   - maximumConnections: The most connections open at once for calls (the listener has one more).
    ///   - eventLoopGroup: The loops the connections run on.
    /// - Throws: ``PostgresFleetError`` when `caFile` cannot be read or the TLS settings are unusable.
    public init(
        database: FleetDatabase,
        password: String?,
        caFile: String? = nil,
        logger: Logger,
        timeout: Double = PostgresFleetStore.defaultTimeout,
        maximumConnections: Int = 4,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws {
        self.database = database
        self.password = password
        self.logger = logger
        self.timeout = timeout
        self.eventLoopGroup = eventLoopGroup
        self.pool = PostgresConnectionPool(maximum: maximumConnections)
        var configuration: PostgresConnection.Configuration
        switch database.address {
        case .tcp(let host, let port):
            let tls: PostgresConnection.Configuration.TLS
            do {
                tls = try Self.tls(database.tls, caFile: caFile)
            } catch {
                throw PostgresFleetError(
                    database: database.displayName,
                    operation: "set up TLS",
                    reason: PostgresFleetError.reason(for: error, masking: password)
                )
            }
            configuration = .init(host: host, port: port, username: database.user, password: password, database: database.name, tls: tls)
        case .unixSocket(let path):
            // Like libpq, never TLS over a Unix socket.
            configuration = .init(
                unixSocketPath: Self.socketFile(path),
                username: database.user,
                password: password,
                database: database.name
            )
        }
        // Longer than the call's deadline, which ends the connecting first with a consistent "no answer" error.
        configuration.options.connectTimeout = .milliseconds(Int64(timeout * 2000))
        self.configuration = configuration
    }

    // MARK: - FleetStore

    public func open(keyCheck: [UInt8]) async throws -> FleetOpening {
        try await perform("open") { connection, logger in
            try await connection.withTransaction(logger: logger) { connection in
                try await Self.open(connection, keyCheck: keyCheck, logger: logger)
            }
        }
    }

    public func read(_ identities: [[UInt8]]) async throws -> [FleetRow] {
        if identities.isEmpty { return [] }
        let ids = identities.map { ByteBuffer(bytes: $0) }
        return try await perform("read") { connection, logger in
            let query: PostgresQuery = """
                SELECT \(unescaped: PostgresFleetSchema.rowColumns) FROM tokend_fleet
                WHERE id = ANY(\(ids)) AND id <> \(unescaped: PostgresFleetSchema.reservedID)
                """
            return try await Self.rows(connection.query(query, logger: logger))
        }
    }

    public func lease(_ identity: [UInt8], holder: String, expecting generation: Int64, for seconds: Double) async throws -> FleetLease {
        let id = try checked(identity, "lease")
        return try await perform("lease") { connection, logger in
            if generation == 0 {
                let insert: PostgresQuery = """
                    INSERT INTO tokend_fleet (id, generation, lease_holder, lease_until)
                    VALUES (\(id), 0, \(holder), now() + make_interval(secs => \(seconds)))
                    ON CONFLICT (id) DO NOTHING RETURNING generation
                    """
                if let granted = try await Self.generation(connection.query(insert, logger: logger)) {
                    return .granted(generation: granted)
                }
            }
            let update: PostgresQuery = """
                UPDATE tokend_fleet SET lease_holder = \(holder), lease_until = now() + make_interval(secs => \(seconds)),
                    updated_at = now()
                WHERE id = \(id) AND generation = \(generation)
                    AND (lease_until IS NULL OR lease_until <= now() OR lease_holder = \(holder))
                RETURNING generation
                """
            if let granted = try await Self.generation(connection.query(update, logger: logger)) {
                return .granted(generation: granted)
            }
            let select: PostgresQuery = "SELECT \(unescaped: PostgresFleetSchema.rowColumns) FROM tokend_fleet WHERE id = \(id)"
            // A row that is gone (dropped by hand) is refused as generation 0: the caller starts over from there.
            let now = try await Self.rows(connection.query(select, logger: logger)).first
            return .refused(now ?? FleetRow(identity: identity, generation: 0))
        }
    }

    public func publish(
        _ identity: [UInt8],
        holder: String,
        generation: Int64,
        sealed: [UInt8],
        obtainedAt: Date,
        expiresAt: Date
    ) async throws -> Int64? {
        let id = try checked(identity, "publish")
        let hex = Self.hex(identity)
        let sealedBuffer = ByteBuffer(bytes: sealed)
        return try await perform("publish") { connection, logger in
            // The NOTIFY goes out when the statement commits, and only if the row was written.
            let query: PostgresQuery = """
                WITH written AS (
                    UPDATE tokend_fleet SET sealed = \(sealedBuffer), obtained_at = \(obtainedAt), expires_at = \(expiresAt),
                        fetched_by = \(holder), generation = generation + 1, lease_holder = NULL, lease_until = NULL,
                        updated_at = now()
                    WHERE id = \(id) AND generation = \(generation) AND lease_holder = \(holder) AND lease_until > now()
                    RETURNING generation
                ), notified AS (
                    SELECT pg_notify(\(PostgresFleetSchema.channel), \(hex)) FROM written
                )
                SELECT generation FROM written, notified
                """
            return try await Self.generation(connection.query(query, logger: logger))
        }
    }

    public func release(_ identity: [UInt8], holder: String) async throws {
        let id = try checked(identity, "release")
        try await perform("release") { connection, logger in
            let query: PostgresQuery = """
                UPDATE tokend_fleet SET lease_holder = NULL, lease_until = NULL, updated_at = now()
                WHERE id = \(id) AND lease_holder = \(holder)
                """
            try await connection.query(query, logger: logger)
        }
    }

    public func listen(
        changed: @escaping @Sendable ([UInt8]) -> Void,
        lost: @escaping @Sendable (any Error) -> Void
    ) async throws {
        let call = PostgresCall()
        let listening = PostgresListening()
        let task = Task {
            var reported: (any Error)?
            do {
                let connection = try await connect()
                defer { PostgresCall.close(connection) }
                guard call.use(connection) else { throw CancellationError() }
                try await connection.listen(on: PostgresFleetSchema.channel) { notifications in
                    listening.started()
                    for try await notification in notifications {
                        if let identity = Self.bytes(hex: notification.payload) { changed(identity) }
                    }
                }
                reported = PostgresFleetError(database: database.displayName, operation: "listen", reason: "the connection ended")
            } catch {
                reported = error
            }
            if let reported, !listening.failed(reported), !isShutDown {
                lost(describe(reported, "listen", call))
            }
        }
        let id = try register(call, task: task)
        let timer = eventLoopGroup.any().scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
            guard !listening.hasStarted else { return }
            call.expire()
            task.cancel()
        }
        defer { timer.cancel() }
        do {
            try await listening.wait()
        } catch {
            _ = await task.result
            unregister(id)
            throw describe(error, "listen", call)
        }
        Task { [weak self] in
            await task.value
            self?.unregister(id)
        }
    }

    public func shutdown() async {
        let running = state.withLockedValue { state in
            state.isShutDown = true
            return state.running
        }
        for entry in running.values {
            entry.call.expire()
            entry.cancel()
        }
        await pool.close()
        for entry in running.values {
            await entry.end()
        }
    }

    // MARK: - Calls

    private var isShutDown: Bool { state.withLockedValue { $0.isShutDown } }

    /// Runs `body` on a pooled connection within the timeout; any failure becomes a ``PostgresFleetError``.
    private func perform<Result: Sendable>(
        _ operation: String,
        _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> Result
    ) async throws -> Result {
        let call = PostgresCall()
        let logger = self.logger
        let work = Task { try await run(call) { try await body($0, logger) } }
        let id = try register(call, task: work)
        defer { unregister(id) }
        // A NIO timer rather than a Task.sleep: cancelled, it leaves the loop's timer heap at once.
        let timer = eventLoopGroup.any().scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
            call.expire()
            work.cancel()
        }
        defer { timer.cancel() }
        do {
            return try await withTaskCancellationHandler {
                try await work.value
            } onCancel: {
                call.expire()
                work.cancel()
            }
        } catch {
            throw describe(error, operation, call)
        }
    }

    /// Gets a connection (idle or new), runs `body`, and gives the connection back (kept only after a success).
    private func run<Result: Sendable>(
        _ call: PostgresCall,
        _ body: @Sendable (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let connection: PostgresConnection
        switch try await pool.acquire() {
        case .reuse(let idle):
            connection = idle
        case .open:
            do {
                connection = try await connect()
            } catch {
                await pool.openFailed()
                throw error
            }
        }
        guard call.use(connection) else {
            await pool.release(connection, reusable: false)
            throw CancellationError()
        }
        do {
            let result = try await body(connection)
            await pool.release(connection, reusable: !call.isExpired)
            return result
        } catch {
            await pool.release(connection, reusable: false)
            throw error
        }
    }

    private func connect() async throws -> PostgresConnection {
        let id = state.withLockedValue { state in
            state.nextConnectionID += 1
            return state.nextConnectionID
        }
        return try await PostgresConnection.connect(on: eventLoopGroup.any(), configuration: configuration, id: id, logger: logger)
    }

    private func register<Success: Sendable>(_ call: PostgresCall, task: Task<Success, any Error>) throws -> Int {
        try register(call, end: { _ = await task.result }, cancel: { task.cancel() })
    }

    private func register(_ call: PostgresCall, task: Task<Void, Never>) throws -> Int {
        try register(call, end: { await task.value }, cancel: { task.cancel() })
    }

    private func register(
        _ call: PostgresCall,
        end: @escaping @Sendable () async -> Void,
        cancel: @escaping @Sendable () -> Void
    ) throws -> Int {
        let id = state.withLockedValue { state -> Int? in
            guard !state.isShutDown else { return nil }
            state.nextCallID += 1
            state.running[state.nextCallID] = (call, end, cancel)
            return state.nextCallID
        }
        guard let id else {
            call.expire()
            cancel()
            throw PostgresFleetError(database: database.displayName, operation: "call", reason: "the store is shut down")
        }
        return id
    }

    private func unregister(_ id: Int) {
        _ = state.withLockedValue { $0.running.removeValue(forKey: id) }
    }

    private func describe(_ error: any Error, _ operation: String, _ call: PostgresCall) -> PostgresFleetError {
        if call.isExpired && !isShutDown {
            return PostgresFleetError(
                database: database.displayName,
                operation: operation,
                reason: "no answer within \(Self.seconds(timeout)) s"
            )
        }
        let reason = isShutDown ? "the store is shut down" : PostgresFleetError.reason(for: error, masking: password)
        return PostgresFleetError(database: database.displayName, operation: operation, reason: reason)
    }

    private func checked(_ identity: [UInt8], _ operation: String) throws -> ByteBuffer {
        // 32 bytes, as FleetCodec makes them; anything else could touch the reserved row.
        guard identity.count == 32 else {
            throw PostgresFleetError(
                database: database.displayName,
                operation: operation,
                reason: "an identity is 32 bytes, not \(identity.count)"
            )
        }
        return ByteBuffer(bytes: identity)
    }

    // MARK: - SQL

    private static func open(_ connection: PostgresConnection, keyCheck: [UInt8], logger: Logger) async throws -> FleetOpening {
        try await connection.query("SELECT pg_advisory_xact_lock(\(PostgresFleetSchema.lockKey))", logger: logger)
        let exists =
            try await connection.query("SELECT to_regclass('tokend_fleet') IS NOT NULL", logger: logger)
            .decode(Bool.self).first { _ in true } ?? false
        var found: Int64 = 0
        var stored: ByteBuffer?
        if exists {
            let reserved: PostgresQuery =
                "SELECT generation, sealed FROM tokend_fleet WHERE id = \(unescaped: PostgresFleetSchema.reservedID)"
            for try await (version, check) in try await connection.query(reserved, logger: logger).decode((Int64, ByteBuffer?).self) {
                found = version
                stored = check
            }
        }
        let known = PostgresFleetSchema.version
        if found > known { return .schemaTooNew(found: found, known: known) }
        for migration in PostgresFleetSchema.steps(after: found) {
            for statement in migration.statements {
                try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            }
        }
        if found < known || stored == nil {
            let given = ByteBuffer(bytes: keyCheck)
            let upsert: PostgresQuery = """
                INSERT INTO tokend_fleet (id, generation, sealed) VALUES (\(unescaped: PostgresFleetSchema.reservedID), \(known), \(given))
                ON CONFLICT (id) DO UPDATE SET generation = EXCLUDED.generation,
                    sealed = COALESCE(tokend_fleet.sealed, EXCLUDED.sealed), updated_at = now()
                RETURNING sealed
                """
            for try await check in try await connection.query(upsert, logger: logger).decode(ByteBuffer?.self) {
                stored = check
            }
        }
        return stored.map { Array(buffer: $0) } == keyCheck ? .ready : .keyMismatch
    }

    private static func generation(_ rows: PostgresRowSequence) async throws -> Int64? {
        var generation: Int64?
        for try await row in rows {
            generation = try row.decode(Int64.self, context: .default)
        }
        return generation
    }

    private static func rows(_ rows: PostgresRowSequence) async throws -> [FleetRow] {
        var result: [FleetRow] = []
        let columns = (ByteBuffer, Int64, ByteBuffer?, Date?, Date?, String?, String?, Double?).self
        for try await (id, generation, sealed, obtained, expires, fetchedBy, holder, left) in rows.decode(columns) {
            result.append(
                FleetRow(
                    identity: Array(buffer: id),
                    generation: generation,
                    sealed: sealed.map { Array(buffer: $0) },
                    obtainedAt: obtained,
                    expiresAt: expires,
                    fetchedBy: fetchedBy,
                    leaseHolder: holder,
                    leaseLeft: holder == nil ? nil : left
                )
            )
        }
        return result
    }

    // MARK: - Helpers

    private static func tls(_ mode: FleetDatabase.TLSMode, caFile: String?) throws -> PostgresConnection.Configuration.TLS {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        switch mode {
        case .disable:
            return .disable
        case .require:
            tls.certificateVerification = .none
        case .verifyCA, .verifyFull:
            // verify-full with an IP address checks the certificate's IP SAN (NIOSSL matches the peer's address).
            tls.certificateVerification = mode == .verifyCA ? .noHostnameVerification : .fullVerification
            if let caFile {
                let roots: [NIOSSLCertificate]
                do {
                    roots = try NIOSSLCertificate.fromPEMFile(caFile)
                } catch {
                    throw PostgresFleetError(database: "", operation: "", reason: "ca_file \(caFile): no PEM certificates read (\(error))")
                }
                guard !roots.isEmpty else {
                    throw PostgresFleetError(database: "", operation: "", reason: "ca_file \(caFile) holds no PEM certificate")
                }
                tls.trustRoots = .certificates(roots)
            }
        }
        return .require(try NIOSSLContext(configuration: tls))
    }

    /// The socket file: `path` itself, or `.s.PGSQL.5432` in it when it is a directory.
    static func socketFile(_ path: String) -> String {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            return path + "/.s.PGSQL.5432"
        }
        return path
    }

    /// Lowercase hex, the NOTIFY payload.
    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The bytes of a hex payload, or nil when it is not hex.
    static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = nibble(digits[index]), let low = nibble(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return digit - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    private static func seconds(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}
