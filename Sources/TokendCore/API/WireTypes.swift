// swift-format-ignore: AlwaysUseLowerCamelCase
// The property names are the JSON keys of SPEC §8, spelled as on the wire.
/// JSON bodies of the socket API (SPEC §8), shared by the server and the CLI client.
///
/// Times are Unix epoch seconds.
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
        /// With `[fleet]`: where the served token came from: `fetched here`, `from <host>`, `alone` (fetched without
        /// the fleet) or `not shared`.
        public var fleet: String?

        public init(
            name: String,
            state: String,
            token_fingerprint: String?,
            expires_at: Int?,
            next_refresh: Int?,
            outage_budget_seconds: Int,
            consecutive_failures: Int,
            last_error: LastError?,
            fleet: String? = nil
        ) {
            self.name = name
            self.state = state
            self.token_fingerprint = token_fingerprint
            self.expires_at = expires_at
            self.next_refresh = next_refresh
            self.outage_budget_seconds = outage_budget_seconds
            self.consecutive_failures = consecutive_failures
            self.last_error = last_error
            self.fleet = fleet
        }
    }

    /// How the host stands with its fleet (SPEC §14): `connected`, `unreachable`, `key mismatch`, …, and the error.
    public struct FleetBody: Codable, Sendable, Hashable {
        public var state: String
        public var error: String?
        public var host_id: String

        public init(state: String, error: String?, host_id: String) {
            self.state = state
            self.error = error
            self.host_id = host_id
        }
    }

    public struct InstancesBody: Codable, Sendable, Hashable {
        public var instances: [InstanceStatus]
        /// The errors of the last config load (and a rejected reload), each `file:line: key: message`; shown to
        /// admins only, absent when there are none.
        public var config_errors: [String]?
        /// With `[fleet]`: the fleet's state.
        public var fleet: FleetBody?

        public init(instances: [InstanceStatus], config_errors: [String]? = nil, fleet: FleetBody? = nil) {
            self.instances = instances
            self.config_errors = config_errors
            self.fleet = fleet
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

extension API.TokenBody {
    /// The body as `JSONEncoder` with `.sortedKeys` writes it (slashes escaped too), plus a newline, written directly:
    /// this answers every token request, and the encoder is a large share of serving one
    /// (BENCHMARKS.md, "Figures behind code comments").
    ///
    /// `TokenBodyJSONTests` holds it byte for byte to `JSONEncoder`'s output.
    public func json() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(96 + access_token.utf8.count + instance.utf8.count + (scope?.utf8.count ?? 0))
        func key(_ name: StaticString) {
            out.append(out.isEmpty ? UInt8(ascii: "{") : UInt8(ascii: ","))
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
            out.append(contentsOf: #"":"#.utf8)
        }
        key("access_token")
        JSONText.appendString(access_token, to: &out)
        key("expires_at")
        out.append(contentsOf: String(expires_at).utf8)
        key("expires_in")
        out.append(contentsOf: String(expires_in).utf8)
        key("instance")
        JSONText.appendString(instance, to: &out)
        key("scope")
        if let scope { JSONText.appendString(scope, to: &out) } else { out.append(contentsOf: "null".utf8) }
        key("token_type")
        JSONText.appendString(token_type, to: &out)
        out.append(contentsOf: "}\n".utf8)
        return out
    }
}

/// JSON string literals, escaped as Foundation's `JSONEncoder` escapes them.
public enum JSONText {
    public static func appendString(_ text: String, to out: inout [UInt8]) {
        // Tokens, names and types rarely need escaping: then their bytes are copied as they are.
        var text = text
        let plain = text.withUTF8 { bytes -> Bool in
            guard !bytes.contains(where: needsEscape) else { return false }
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: bytes)
            out.append(UInt8(ascii: "\""))
            return true
        }
        if !plain { appendEscaped(text, to: &out) }
    }

    @inline(__always)
    static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "/")
    }

    static func appendEscaped(_ text: String, to out: inout [UInt8]) {
        let hex: StaticString = "0123456789abcdef"
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): out.append(contentsOf: #"\\"#.utf8)
            case UInt8(ascii: "/"): out.append(contentsOf: #"\/"#.utf8)
            case 0x08: out.append(contentsOf: #"\b"#.utf8)
            case 0x0C: out.append(contentsOf: #"\f"#.utf8)
            case 0x0A: out.append(contentsOf: #"\n"#.utf8)
            case 0x0D: out.append(contentsOf: #"\r"#.utf8)
            case 0x09: out.append(contentsOf: #"\t"#.utf8)
            case 0..<0x20:
                out.append(contentsOf: #"\u00"#.utf8)
                out.append(hex.utf8Start[Int(byte >> 4)])
                out.append(hex.utf8Start[Int(byte & 0x0F)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
