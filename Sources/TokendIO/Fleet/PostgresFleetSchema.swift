import PostgresNIO

/// The fleet's one table, `tokend_fleet`, and the steps that bring it from any earlier version to ``version``.
///
/// One reserved row, `id = '\x00'` (identities are 32 bytes, so it cannot clash), holds the schema version in
/// `generation` and the fleet's key-check value in `sealed`. Opening runs under a transaction-scoped advisory lock
/// (``lockKey``), so hosts that start together create and migrate the table once.
enum PostgresFleetSchema {
    /// One step: the statements that take the table from `version - 1` to `version`.
    struct Migration: Sendable {
        var version: Int64
        var statements: [String]
    }

    static let table = "tokend_fleet"
    /// The LISTEN/NOTIFY channel; each payload is the lowercase hex of a written identity.
    static let channel = "tokend_fleet"
    /// `pg_advisory_xact_lock` key for opening: "tokend" in ASCII.
    static let lockKey: Int64 = 0x746f_6b65_6e64
    /// The reserved row's id, as SQL.
    static let reservedID = "decode('00', 'hex')"

    /// Every step in order; the next schema change appends one (and ``version`` follows).
    static let migrations: [Migration] = [
        Migration(
            version: 1,
            statements: [
                """
                CREATE TABLE IF NOT EXISTS tokend_fleet (
                    id bytea PRIMARY KEY,
                    generation bigint NOT NULL,
                    sealed bytea,
                    obtained_at timestamptz,
                    expires_at timestamptz,
                    fetched_by text,
                    lease_holder text,
                    lease_until timestamptz,
                    updated_at timestamptz DEFAULT now()
                )
                """
            ]
        )
    ]

    /// The version this tokend writes and understands.
    static var version: Int64 { migrations.last?.version ?? 0 }

    /// The steps after `found`, in order.
    static func steps(after found: Int64) -> [Migration] {
        migrations.filter { $0.version > found }
    }

    /// The row columns every read selects, the lease only while it is live by the database's clock.
    static let rowColumns = """
        id, generation, sealed, obtained_at, expires_at, fetched_by,
        CASE WHEN lease_until > now() THEN lease_holder END,
        CASE WHEN lease_until > now() THEN EXTRACT(EPOCH FROM lease_until - now())::float8 END
        """
}
