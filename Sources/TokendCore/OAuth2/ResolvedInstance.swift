import Crypto
import Foundation

/// An instance whose secrets have been read: its definition, its variable values and what they render to.
///
/// Like ``InstanceDefinition`` the fields live in one shared copy-on-write box: a resolved instance is kept by the
/// render memo, the loaded config and the daemon's running state, and each copy costs a pointer. The rendered request
/// itself is not kept: it is rendered again for each fetch (``renderRequest()``), since keeping its URLs, headers and
/// body for every instance costs more memory than a render every few minutes costs time.
@dynamicMemberLookup
public struct ResolvedInstance: Sendable, Hashable {
    public struct Fields: Sendable, Hashable {
        public var definition: InstanceDefinition
        /// The values the instance sets (secrets read), without the connector's defaults (``variables`` adds them):
        /// the same dictionary the render memo keys on, so keeping it costs nothing.
        public var values: VariableMap<Secret>
        /// The TLS material the request is sent with.
        public var tls: TLSMaterial
        /// The token endpoint's host (and port), for per-endpoint limits and messages.
        public var endpointHost: String
        /// SHA-256 over the rendered request and response shape, with every secret replaced by its own SHA-256.
        ///
        /// A change of fingerprint invalidates the cached token. Kept as the digest (32 bytes inline); its hex,
        /// ``ResolvedInstance/fingerprint``, is made when asked for rather than kept by every instance.
        public var fingerprintDigest: SHA256.Digest
        /// Who may read the token; nil when the socket's permissions decide.
        public var access: AccessPolicy?
        /// Where the raw token is also written, if anywhere.
        public var sink: SinkTarget?
    }

    @usableFromInline var storage: SharedBox<Fields>

    public init(
        definition: InstanceDefinition,
        values: VariableMap<Secret>,
        tls: TLSMaterial,
        endpointHost: String,
        fingerprint: SHA256.Digest,
        access: AccessPolicy? = nil,
        sink: SinkTarget? = nil
    ) {
        storage = SharedBox(
            Fields(
                definition: definition,
                values: values,
                tls: tls,
                endpointHost: endpointHost,
                fingerprintDigest: fingerprint,
                access: access,
                sink: sink
            )
        )
    }

    /// The fingerprint's hex, as cache records carry it.
    public var fingerprint: String { TokenRequestBuilder.hex(self.fingerprintDigest) }

    /// The token request, rendered now from the definition and values (it rendered when the instance was resolved,
    /// and rendering is pure, so it renders the same again).
    public func renderRequest() -> Result<TokenRequest, ConfigDiagnostic> {
        // The URL was checked when the instance was resolved; parsing it again was most of a render's time.
        TokenRequestBuilder.request(self.definition, values: self.values, tls: self.tls, checkURL: false)
    }

    /// ``renderRequest()`` for callers that hold a resolved instance, which always renders.
    public var request: TokenRequest {
        switch renderRequest() {
        case .success(let request): return request
        case .failure(let diagnostic): preconditionFailure("a resolved instance no longer renders: \(diagnostic)")
        }
    }

    @inlinable
    public subscript<Value>(dynamicMember field: WritableKeyPath<Fields, Value>) -> Value {
        get { storage.value[keyPath: field] }
        set { storage.value[keyPath: field] = newValue }
    }

    public var name: String { self.definition.name }

    /// Every variable's value, the connector's defaults included, each wrapped so that printing it shows `<redacted>`.
    ///
    /// Built when asked for (`tokend check --show`) rather than kept by every instance for a rare command.
    public var variables: [String: Secret] {
        TokenRequestBuilder.variables(self.definition, values: self.values)
    }

    /// One variable's value, the connector's default if the instance sets none.
    public func variable(_ name: String) -> Secret? {
        self.values[name] ?? self.definition.connector.variables[name]?.defaultValue.map(Secret.init)
    }

    /// The values of the secret variables, so that messages from outside can be scrubbed of them.
    public var secretValues: [String] {
        self.definition.secretVariables.compactMap { variable($0)?.revealed }.filter { !$0.isEmpty }
    }

    /// The secret values and the credentials of the request's `Authorization` header (a Basic header carries the
    /// secret base64-encoded): everything a provider's echo of the request must be scrubbed of.
    public var sensitiveValues: [String] {
        let request = (try? renderRequest().get())
        let credentials = (request?.headers ?? []).filter { $0.name.lowercased() == "authorization" }.flatMap { header in
            [header.value, String(header.value.drop { $0 != " " }.dropFirst())]
        }
        return secretValues + credentials.filter { $0.utf8.count >= 8 }
    }
}
