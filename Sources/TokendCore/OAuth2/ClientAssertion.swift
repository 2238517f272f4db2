import Crypto
import Foundation
import _CryptoExtras

/// The JWS algorithm of a client assertion (RFC 7518 §3.1).
public enum AssertionAlgorithm: String, Sendable, Hashable, CaseIterable {
    case rs256 = "RS256"
    case es256 = "ES256"
    case hs256 = "HS256"
}

/// A key that signs client assertions, parsed from PEM (`private_key_jwt`) or the client secret (`client_secret_jwt`).
public enum AssertionKey: Sendable {
    case rsa(_RSA.Signing.PrivateKey)
    case p256(P256.Signing.PrivateKey)
    case hmac(SymmetricKey)

    public var algorithm: AssertionAlgorithm {
        switch self {
        case .rsa: .rs256
        case .p256: .es256
        case .hmac: .hs256
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
        if (try? _RSA.Signing.PrivateKey(unsafePEMRepresentation: trimmed)) != nil {
            return .failure(AssertionError("the RSA key is shorter than 2048 bits"))
        }
        return .failure(AssertionError("not an RSA or EC P-256 private key in PEM form (RS256 or ES256)"))
    }

    /// Signs the JWS signing input: PKCS #1 v1.5 with SHA-256, ECDSA P-256 with SHA-256 (r‖s, RFC 7518 §3.4), or
    /// HMAC-SHA-256.
    func sign(_ input: Data) throws -> Data {
        switch self {
        case .rsa(let key): return try key.signature(for: input, padding: .insecurePKCS1v1_5).rawRepresentation
        case .p256(let key): return try key.signature(for: input).rawRepresentation
        case .hmac(let key): return Data(HMAC<SHA256>.authenticationCode(for: input, using: key))
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
/// Built once per load; ``signed(now:jti:)`` makes a fresh JWT for each token request.
public struct ClientAssertion: Sendable, Hashable, CustomStringConvertible {
    public static let assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    /// How long an assertion is valid after `iat` (seconds).
    public static let defaultLifetime: Double = 60

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

    public var description: String { "ClientAssertion(\(algorithm.rawValue), iss=\(clientID), aud=\(audience))" }

    /// The signing key for this assertion.
    public func key() -> Result<AssertionKey, AssertionError> {
        if algorithm == .hs256 {
            return .success(.hmac(SymmetricKey(data: Data(keyMaterial.revealed.utf8))))
        }
        return AssertionKey.parse(pem: keyMaterial.revealed)
    }

    /// A compact JWS: header `{"alg","typ":"JWT","kid"?}`, claims `iss`, `sub`, `aud`, `jti`, `iat`, `exp`
    /// (and `nbf` = `iat`), signed with the key.
    public func signed(now: Date, jti: String) -> Result<String, AssertionError> {
        let key: AssertionKey
        switch self.key() {
        case .success(let parsed): key = parsed
        case .failure(let error): return .failure(error)
        }
        var header: [String: Any] = ["alg": key.algorithm.rawValue, "typ": "JWT"]
        if let keyID, !keyID.isEmpty { header["kid"] = keyID }
        let issuedAt = Int(now.timeIntervalSince1970.rounded(.down))
        let claims: [String: Any] = [
            "iss": clientID,
            "sub": clientID,
            "aud": audience,
            "jti": jti,
            "iat": issuedAt,
            "nbf": issuedAt,
            "exp": issuedAt + Int(lifetime),
        ]
        guard let headerJSON = try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]),
            let claimsJSON = try? JSONSerialization.data(withJSONObject: claims, options: [.sortedKeys, .withoutEscapingSlashes])
        else {
            return .failure(AssertionError("cannot encode the assertion"))
        }
        let input = Base64URL.encode(headerJSON) + "." + Base64URL.encode(claimsJSON)
        do {
            let signature = try key.sign(Data(input.utf8))
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
