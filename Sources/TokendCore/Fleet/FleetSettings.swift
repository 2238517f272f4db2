import Foundation

/// `[fleet]` in `tokend.toml` (SPEC §14): hosts that share one token per instance through PostgreSQL.
public struct FleetSettings: Sendable, Hashable {
    /// Where the database is and how to reach it, from the `database` URL.
    public var database: FleetDatabase
    /// The database password (`{ credential = … }` or `{ file = … }`); never in the URL.
    public var password: VariableSource?
    /// 32 bytes, standard base64: the AES-256-GCM key (and HMAC key) the fleet shares.
    public var key: VariableSource
    /// The CA certificates that verify the server, for `sslmode=verify-ca` and `verify-full` (else the system's).
    public var caFile: String?
    /// This host's name in the fleet's rows; nil reads `/etc/machine-id`.
    public var hostID: String?
    /// Seconds one host may hold its claim to refresh an instance (must be shorter than `min_lead`).
    public var lease: Double = 20

    public init(database: FleetDatabase, password: VariableSource? = nil, key: VariableSource) {
        self.database = database
        self.password = password
        self.key = key
    }
}

/// A PostgreSQL connection target, parsed from a `postgresql://` URL.
public struct FleetDatabase: Sendable, Hashable {
    /// A TCP host and port, or a Unix socket (`?host=/run/postgresql`: the socket file `/run/postgresql/.s.PGSQL.<port>`).
    public enum Address: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unixSocket(path: String)
    }

    /// libpq's `sslmode` values that tokend supports.
    public enum TLSMode: String, Sendable, Hashable, CaseIterable {
        /// No TLS (a Unix socket, a trusted network).
        case disable
        /// TLS, the server's certificate not checked.
        case require
        /// TLS, the certificate checked against `ca_file`, not the host name.
        case verifyCA = "verify-ca"
        /// TLS, the certificate and the host name checked (the default).
        case verifyFull = "verify-full"
    }

    public var address: Address
    public var user: String
    public var name: String
    public var tls: TLSMode

    public init(address: Address, user: String, name: String, tls: TLSMode) {
        self.address = address
        self.user = user
        self.name = name
        self.tls = tls
    }

    /// Where it is, for log lines and status (no password is ever in it).
    public var displayName: String {
        switch address {
        case .tcp(let host, let port): return "\(user)@\(host):\(port)/\(name)"
        case .unixSocket(let path): return "\(user)@\(path)/\(name)"
        }
    }
}
