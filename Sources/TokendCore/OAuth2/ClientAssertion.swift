import Crypto
import Foundation
import _CryptoExtras

/// The JWS algorithm of a client assertion (RFC 7518 §3.1).
public enum AssertionAlgorithm: String, Sendable, Hashable, CaseIterable {
    case rs256 = "RS256"
    /// RSASSA-PSS with SHA-256 and MGF1-SHA-256, salt of 32 bytes (RFC 7518 §3.5).
    case ps256 = "PS256"
    case es256 = "ES256"
    case hs256 = "HS256"
    /// Ed25519 (RFC 8037).
    case edDSA = "EdDSA"

    /// What a key for this algorithm is, for messages.
    public var keyKind: String {
        switch self {
        case .rs256, .ps256: "an RSA private key"
        case .es256: "an EC P-256 private key"
        case .hs256: "a shared secret"
        case .edDSA: "an Ed25519 private key"
        }
    }
}

/// A key that signs client assertions, parsed from PEM (`private_key_jwt`) or the client secret (`client_secret_jwt`).
public enum AssertionKey: Sendable {
    case rsa(_RSA.Signing.PrivateKey)
    case p256(P256.Signing.PrivateKey)
    case hmac(SymmetricKey)
    case ed25519(Curve25519.Signing.PrivateKey)

    /// The algorithm a key of this kind signs with when none is configured (RSA: RS256).
    public var algorithm: AssertionAlgorithm {
        switch self {
        case .rsa: .rs256
        case .p256: .es256
        case .hmac: .hs256
        case .ed25519: .edDSA
        }
    }

    /// Whether this key can sign with `algorithm` (an RSA key signs RS256 and PS256).
    public func signs(_ algorithm: AssertionAlgorithm) -> Bool {
        algorithm == self.algorithm || (algorithm == .ps256 && self.algorithm == .rs256)
    }

    /// What the key is, for messages.
    public var kind: String {
        switch self {
        case .rsa: "an RSA key"
        case .p256: "an EC P-256 key"
        case .hmac: "a shared secret"
        case .ed25519: "an Ed25519 key"
        }
    }

    /// Parses a PEM private key: EC P-256 (SEC 1 or PKCS #8) for ES256, RSA of at least 2048 bits (PKCS #1 or PKCS #8)
    /// for RS256.
    ///
    /// The error never contains the key.
    public static func parse(pem: String) -> Result<AssertionKey, AssertionError> {
        let trimmed = pem.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.hasPrefix("-----BEGIN ") else {
            return .failure(AssertionError("expected a PEM private key (-----BEGIN PRIVATE KEY-----)"))
        }
        if let key = try? P256.Signing.PrivateKey(pemRepresentation: trimmed) { return .success(.p256(key)) }
        if let key = try? _RSA.Signing.PrivateKey(pemRepresentation: trimmed) { return .success(.rsa(key)) }
        if let key = try? Curve25519.Signing.PrivateKey(pemRepresentation: trimmed) { return .success(.ed25519(key)) }
        if (try? _RSA.Signing.PrivateKey(unsafePEMRepresentation: trimmed)) != nil {
            return .failure(AssertionError("the RSA key is shorter than 2048 bits"))
        }
        return .failure(AssertionError("not an RSA, EC P-256 or Ed25519 private key in PEM form"))
    }

    /// Signs the JWS signing input: PKCS #1 v1.5 or PSS with SHA-256, ECDSA P-256 with SHA-256 (r‖s, RFC 7518 §3.4),
    /// HMAC-SHA-256, or Ed25519.
    func sign(_ input: Data, as algorithm: AssertionAlgorithm) throws -> Data {
        switch self {
        case .rsa(let key):
            // swift-crypto's PSS uses MGF1 with the message digest and a salt as long as it: RFC 7518 §3.5.
            let padding: _RSA.Signing.Padding = algorithm == .ps256 ? .PSS : .insecurePKCS1v1_5
            return try key.signature(for: input, padding: padding).rawRepresentation
        case .p256(let key): return try key.signature(for: input).rawRepresentation
        case .hmac(let key): return Data(HMAC<SHA256>.authenticationCode(for: input, using: key))
        case .ed25519(let key): return try key.signature(for: input)
        }
    }
}

/// Why a client assertion could not be built; never contains key material.
public struct AssertionError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// What a client assertion says and how it is signed (RFC 7523 §2.2, §3; OpenID Connect Core §9).
///
/// Built once per load; ``signed(now:jti:)`` makes a fresh JWT for each token request. Without `[assertion]` the
/// claims are fixed (`iss` = `sub` = client id, `aud`); with it (SPEC §12) ``claims`` replace those defaults and add
/// others, and ``headerFields`` carry certificate thumbprints.
public struct ClientAssertion: Sendable, Hashable, CustomStringConvertible {
    public static let assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    /// How long an assertion is valid after `iat` (seconds).
    public static let defaultLifetime: Double = 60
    /// What the built-in `{{assertion}}` renders to in a body until the request is signed: letters and digits only,
    /// so that form and JSON encoding leave it as it is and the signed JWT can take its place.
    public static let bodyMarker = "tokendASSERTIONe5c2f9a04b1d"

    /// A claim's value once its template is rendered.
    public enum ClaimValue: Sendable, Hashable {
        case string(String)
        case integer(Int)
        case boolean(Bool)
        case strings([String])
        /// Rendered empty: the claim is left out, its default too (`sub = ""` for a service account).
        case absent

        var json: Any? {
            switch self {
            case .string(let text): text
            case .integer(let number): number
            case .boolean(let flag): flag
            case .strings(let texts): texts
            case .absent: nil
            }
        }
    }

    /// `iss` and `sub`: the client id.
    public var clientID: String
    /// `aud`: the token URL, or `assertion_audience`.
    public var audience: String
    /// `kid` in the header, when set.
    public var keyID: String?
    public var lifetime: Double
    /// The PEM key or client secret, kept as a ``Secret`` so that the request never prints it.
    public var keyMaterial: Secret
    public var algorithm: AssertionAlgorithm
    /// `[assertion.claims]`, rendered: each replaces the default of its name or adds a claim.
    public var claims: [String: ClaimValue] = [:]
    /// Header fields besides `alg`, `typ` and `kid`: `x5t`, `x5t#S256`.
    public var headerFields: [String: String] = [:]
    /// Whether the request carries it as `client_assertion` (`private_key_jwt`, `client_secret_jwt`); an assertion
    /// used only as `{{assertion}}` in the body is not.
    public var isClientAuthentication = true
    /// Whether it comes from an `[assertion]` table (its fields then enter the request fingerprint).
    public var isConfigured = false

    public init(
        clientID: String,
        audience: String,
        keyID: String?,
        keyMaterial: Secret,
        algorithm: AssertionAlgorithm,
        lifetime: Double = ClientAssertion.defaultLifetime
    ) {
        self.clientID = clientID
        self.audience = audience
        self.keyID = keyID
        self.keyMaterial = keyMaterial
        self.algorithm = algorithm
        self.lifetime = lifetime
    }

    /// The issuer as signed: the `iss` claim when given, else the client id.
    public var issuer: String {
        if case .string(let text)? = claims["iss"] { return text }
        return clientID
    }

    /// The audience as signed: the `aud` claim when given, else ``audience``.
    public var signedAudience: String {
        switch claims["aud"] {
        case .string(let text)?: text
        case .strings(let texts)?: texts.joined(separator: " ")
        default: audience
        }
    }

    public var description: String { "ClientAssertion(\(algorithm.rawValue), iss=\(issuer), aud=\(signedAudience))" }

    /// The signing key for this assertion.
    public func key() -> Result<AssertionKey, AssertionError> {
        if algorithm == .hs256 {
            return .success(.hmac(SymmetricKey(data: Data(keyMaterial.revealed.utf8))))
        }
        return AssertionKey.parse(pem: keyMaterial.revealed)
    }

    /// A compact JWS: header `{"alg","typ":"JWT","kid"?}` and any ``headerFields``; claims `iss`, `sub`, `aud` (or
    /// what ``claims`` gives instead), the other ``claims``, and `jti`, `iat`, `nbf` = `iat`, `exp` = `iat` +
    /// lifetime; signed with the key.
    public func signed(now: Date, jti: String) -> Result<String, AssertionError> {
        let key: AssertionKey
        switch self.key() {
        case .success(let parsed): key = parsed
        case .failure(let error): return .failure(error)
        }
        guard key.signs(algorithm) else {
            return .failure(AssertionError("\(key.kind) cannot sign \(algorithm.rawValue)"))
        }
        var header: [String: Any] = ["alg": algorithm.rawValue, "typ": "JWT"]
        if let keyID, !keyID.isEmpty { header["kid"] = keyID }
        for (name, value) in headerFields { header[name] = value }
        let issuedAt = Int(now.timeIntervalSince1970.rounded(.down))
        var claims: [String: Any] = ["iss": clientID, "sub": clientID, "aud": audience]
        for (name, value) in self.claims { claims[name] = value.json }  // nil removes the default
        claims["jti"] = jti
        claims["iat"] = issuedAt
        claims["nbf"] = issuedAt
        claims["exp"] = issuedAt + Int(lifetime)
        guard let headerJSON = try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .withoutEscapingSlashes]),
            let claimsJSON = try? JSONSerialization.data(withJSONObject: claims, options: [.sortedKeys, .withoutEscapingSlashes])
        else {
            return .failure(AssertionError("cannot encode the assertion"))
        }
        let input = Base64URL.encode(headerJSON) + "." + Base64URL.encode(claimsJSON)
        do {
            let signature = try key.sign(Data(input.utf8), as: algorithm)
            return .success(input + "." + Base64URL.encode(signature))
        } catch {
            return .failure(AssertionError("signing the client assertion failed"))
        }
    }
}

/// Base64 with the URL alphabet and no padding (RFC 7515 §2).
public enum Base64URL {
    public static func encode(_ data: Data) -> String {
        data.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public static func decode(_ text: some StringProtocol) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.utf8.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64)
    }
}
