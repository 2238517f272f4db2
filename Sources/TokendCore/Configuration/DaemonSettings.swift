/// `tokend.toml`: settings for the whole daemon, all optional.
public struct DaemonSettings: Sendable, Hashable {
    public var socketMode: UInt16 = 0o660
    public var socketGroup: String?
    /// Members of this group (name or gid) may use the admin endpoints, beside root and the daemon's own uid.
    public var adminGroup: String?
    public var logLevel: String = "info"
    /// `READY=1` is sent no later than this after start, even if some first fetches are still failing.
    public var startupTimeout: Double = 30
    /// Who may hold how many socket connections (SPEC §8): `max_connections`, `max_connections_per_uid`,
    /// `admin_connections`.
    public var connections = ConnectionAdmission.Limits()
    /// A request head (request line and header fields) must be complete this many seconds after its first byte
    /// (`request_head_timeout`); a connection still sending one then is closed.
    public var requestHeadTimeout: Double = 10
    public var refresh = RefreshSettings()
    public var connectTimeout: Double = 10
    public var requestTimeout: Double = 30
    /// `[http] proxy`: an `http://host:port` proxy for token and discovery requests (else `HTTPS_PROXY`).
    public var proxy: String?
    /// `[http] no_proxy`: hosts reached directly (else `NO_PROXY`).
    public var noProxy: [String]?
    /// `[fleet]`: share one token per instance with other hosts through PostgreSQL (SPEC §14); nil: on its own.
    public var fleet: FleetSettings?
    /// `[metrics]`: a TCP listener for `GET /metrics` and a node_exporter textfile, beside the socket's `/metrics`.
    public var metrics = MetricsSettings()

    public init() {}

    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
}

/// When to refresh and how to retry; SPEC §5's `[refresh]` table.
public struct RefreshSettings: Sendable, Hashable {
    /// Refresh once this fraction of the token's lifetime has passed (but see ``minLead``).
    public var ratio: Double = 0.75
    /// Refresh no later than this before expiry (seconds), whatever ``ratio`` says.
    public var minLead: Double = 60
    /// ± fraction of the lead time.
    public var jitter: Double = 0.10
    /// Never fetch the same instance more often than this (seconds).
    public var minInterval: Double = 30
    public var retryInitial: Double = 1
    public var retryMax: Double = 300
    public var permanentRetry: Double = 600
    /// `bound_to_input`: a token obtained with another instance's token (`{ instance = … }`) is never served after
    /// that input token stops being servable (SPEC §11).
    public var boundToInput = false
    /// Token requests in flight, all instances together.
    public var maxConcurrent = 64
    /// Token requests in flight to one token endpoint host.
    public var perEndpointConcurrent = 8

    public init() {}

    /// The subset an instance may override; nil keeps the daemon's value.
    public struct Overrides: Sendable, Hashable {
        /// The values, in a box that is nil while none is set: nearly every connector and instance sets none, and
        /// seven optional numbers inline would sit twice in every instance.
        @usableFromInline struct Values: Sendable, Hashable {
            var ratio: Double?
            var minLead: Double?
            var jitter: Double?
            var minInterval: Double?
            var retryInitial: Double?
            var retryMax: Double?
            var permanentRetry: Double?
            var boundToInput: Bool?
        }

        @usableFromInline var storage: SharedBox<Values>?

        private var values: Values {
            get { storage?.value ?? Values() }
            set { storage = newValue == Values() ? nil : SharedBox(newValue) }
        }

        public var ratio: Double? {
            get { values.ratio }
            set { values.ratio = newValue }
        }
        public var minLead: Double? {
            get { values.minLead }
            set { values.minLead = newValue }
        }
        public var jitter: Double? {
            get { values.jitter }
            set { values.jitter = newValue }
        }
        public var minInterval: Double? {
            get { values.minInterval }
            set { values.minInterval = newValue }
        }
        public var retryInitial: Double? {
            get { values.retryInitial }
            set { values.retryInitial = newValue }
        }
        public var retryMax: Double? {
            get { values.retryMax }
            set { values.retryMax = newValue }
        }
        public var permanentRetry: Double? {
            get { values.permanentRetry }
            set { values.permanentRetry = newValue }
        }
        public var boundToInput: Bool? {
            get { values.boundToInput }
            set { values.boundToInput = newValue }
        }

        public init() {}

        /// These overrides with `other`'s set values taking precedence.
        public func overridden(by other: Overrides) -> Overrides {
            guard other.storage != nil else { return self }
            guard storage != nil else { return other }
            var result = self
            result.ratio = other.ratio ?? ratio
            result.minLead = other.minLead ?? minLead
            result.jitter = other.jitter ?? jitter
            result.minInterval = other.minInterval ?? minInterval
            result.retryInitial = other.retryInitial ?? retryInitial
            result.retryMax = other.retryMax ?? retryMax
            result.permanentRetry = other.permanentRetry ?? permanentRetry
            result.boundToInput = other.boundToInput ?? boundToInput
            return result
        }
    }

    /// These settings with an instance's overrides applied.
    ///
    /// (See also ``Overrides/overridden(by:)`` for stacking a connector's and an instance's overrides.)
    public func applying(_ overrides: Overrides) -> RefreshSettings {
        guard overrides.storage != nil else { return self }
        var result = self
        if let value = overrides.ratio { result.ratio = value }
        if let value = overrides.minLead { result.minLead = value }
        if let value = overrides.jitter { result.jitter = value }
        if let value = overrides.minInterval { result.minInterval = value }
        if let value = overrides.retryInitial { result.retryInitial = value }
        if let value = overrides.retryMax { result.retryMax = value }
        if let value = overrides.permanentRetry { result.permanentRetry = value }
        if let value = overrides.boundToInput { result.boundToInput = value }
        return result
    }
}
