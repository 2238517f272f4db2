/// JSON bodies of the socket API (SPEC §8), shared by the server and the CLI client. Times are Unix epoch seconds.
public enum API {
    /// `GET /v1/tokens/{instance}`.
    public struct TokenBody: Codable, Sendable, Hashable {
        public var instance: String
        public var access_token: String
        public var token_type: String
        public var expires_at: Int
        public var expires_in: Int
        public var scope: String?

        public init(instance: String, access_token: String, token_type: String, expires_at: Int, expires_in: Int, scope: String?) {
            self.instance = instance
            self.access_token = access_token
            self.token_type = token_type
            self.expires_at = expires_at
            self.expires_in = expires_in
            self.scope = scope
        }

        private enum CodingKeys: String, CodingKey {
            case instance, access_token, token_type, expires_at, expires_in, scope
        }

        /// Like the synthesized encoder, but `scope` is always present (`null` when none was granted or asked for).
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(instance, forKey: .instance)
            try container.encode(access_token, forKey: .access_token)
            try container.encode(token_type, forKey: .token_type)
            try container.encode(expires_at, forKey: .expires_at)
            try container.encode(expires_in, forKey: .expires_in)
            try container.encode(scope, forKey: .scope)
        }
    }

    /// The last failure of an instance, as the API shows it.
    public struct LastError: Codable, Sendable, Hashable {
        public var code: String
        public var message: String
        public var kind: String

        public init(code: String, message: String, kind: String) {
            self.code = code
            self.message = message
            self.kind = kind
        }
    }

    /// One entry of `GET /v1/instances`: never a secret or a token.
    public struct InstanceStatus: Codable, Sendable, Hashable {
        public var name: String
        public var state: String
        public var token_fingerprint: String?
        public var expires_at: Int?
        public var next_refresh: Int?
        public var outage_budget_seconds: Int
        public var consecutive_failures: Int
        public var last_error: LastError?

        public init(
            name: String, state: String, token_fingerprint: String?, expires_at: Int?, next_refresh: Int?,
            outage_budget_seconds: Int, consecutive_failures: Int, last_error: LastError?
        ) {
            self.name = name
            self.state = state
            self.token_fingerprint = token_fingerprint
            self.expires_at = expires_at
            self.next_refresh = next_refresh
            self.outage_budget_seconds = outage_budget_seconds
            self.consecutive_failures = consecutive_failures
            self.last_error = last_error
        }
    }

    public struct InstancesBody: Codable, Sendable, Hashable {
        public var instances: [InstanceStatus]

        public init(instances: [InstanceStatus]) {
            self.instances = instances
        }
    }

    /// `GET /v1/health`: `status` is `ok` or `degraded`; `reasons` names each instance without a valid token.
    public struct HealthBody: Codable, Sendable, Hashable {
        public var status: String
        public var reasons: [String: String]

        public init(status: String, reasons: [String: String]) {
            self.status = status
            self.reasons = reasons
        }
    }

    /// The answer to a command (`refresh`, `invalidate`).
    public struct CommandBody: Codable, Sendable, Hashable {
        public var instance: String
        public var accepted: Bool
        public var message: String

        public init(instance: String, accepted: Bool, message: String) {
            self.instance = instance
            self.accepted = accepted
            self.message = message
        }
    }

    /// Every error answer: a stable code and a message.
    public struct ErrorBody: Codable, Sendable, Hashable {
        public var error: String
        public var message: String
        public var instance: String?
        public var last_error: String?

        public init(error: String, message: String, instance: String? = nil, last_error: String? = nil) {
            self.error = error
            self.message = message
            self.instance = instance
            self.last_error = last_error
        }
    }
}
