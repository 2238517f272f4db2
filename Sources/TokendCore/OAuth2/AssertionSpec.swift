import Crypto
import Foundation

/// A connector's `[assertion]` table (SPEC §12): the JWT tokend signs for each request, as written.
///
/// It is the client assertion of `private_key_jwt` and `client_secret_jwt`, and the value of the built-in
/// `{{assertion}}` in a `[body]` (the RFC 7523 §2.1 JWT-bearer grant). Templates are rendered when the instance
/// is resolved; the JWT itself is signed for each request (``ClientAssertion/signed(now:jti:)``).
public struct AssertionSpec: Sendable, Hashable {
    /// One `[assertion.claims]` entry: a template, or a number, boolean or array written as such in TOML.
    public enum ClaimTemplate: Sendable, Hashable {
        case text(String)
        case integer(Int)
        case boolean(Bool)
        case texts([String])

        /// The templates it holds, for placeholder checks.
        var templates: [String] {
            switch self {
            case .text(let template): [template]
            case .texts(let templates): templates
            case .integer, .boolean: []
            }
        }
    }

    /// A named claim and the line it was written on.
    public struct Claim: Sendable, Hashable {
        public var name: String
        public var value: ClaimTemplate
        public var line: Int?

        public init(name: String, value: ClaimTemplate, line: Int? = nil) {
            self.name = name
            self.value = value
            self.line = line
        }
    }

    /// The claims tokend sets for each signing; `[assertion.claims]` may not give them.
    public static let reservedClaims: Set<String> = ["jti", "iat", "nbf", "exp"]
    /// The longest `lifetime` accepted: an assertion is a short-lived proof (Google and Entra allow one hour).
    public static let maximumLifetime: Double = 3600

    public var algorithm: AssertionAlgorithm
    /// Seconds from `iat` to `exp`.
    public var lifetime: Double = ClientAssertion.defaultLifetime
    /// `kid`: a template; the header leaves `kid` out when it renders empty.
    public var keyID: String?
    /// `x5t_s256 = true`: header `x5t#S256` from the `client_certificate` variable.
    public var x5tS256 = false
    /// `x5t = true`: header `x5t` (SHA-1) from the `client_certificate` variable.
    public var x5t = false
    /// `[assertion.claims]`, in the order written.
    public var claims: [Claim] = []
    /// Lines of the keys, for messages: `alg`, `kid` and the table itself.
    public var algorithmLine: Int?
    public var keyIDLine: Int?
    public var line: Int?

    public init(algorithm: AssertionAlgorithm) {
        self.algorithm = algorithm
    }

    /// The variable holding the signing key: `client_secret` for HS256, else `private_key` (a PEM).
    public var keyVariable: String { algorithm == .hs256 ? "client_secret" : "private_key" }

    /// Whether the header carries a certificate thumbprint, so that `client_certificate` is required.
    public var usesCertificate: Bool { x5t || x5tS256 }

    /// Every `{{name}}` of its templates, with keys as ``ConnectorDefinition/placeholders`` names them.
    public var placeholders: [(name: String, key: String)] {
        var found: [(String, String)] = []
        for name in Template.placeholders(in: keyID ?? "") { found.append((name, "assertion.kid")) }
        for claim in claims {
            for template in claim.value.templates {
                for name in Template.placeholders(in: template) { found.append((name, "assertion.claims.\(claim.name)")) }
            }
        }
        return found
    }

    /// The line of the template at `key` (`assertion.kid`, `assertion.claims.<name>`).
    public func line(ofTemplate key: String) -> Int? {
        if key == "assertion.kid" { return keyIDLine ?? line }
        return claims.first { "assertion.claims.\($0.name)" == key }?.line ?? line
    }
}

/// Certificate thumbprints for the JWS `x5t` and `x5t#S256` headers (RFC 7515 §4.1.7, §4.1.8).
public enum CertificateThumbprint {
    /// The DER of the first certificate of a PEM text, or nil when there is none.
    ///
    /// Only the PEM armour and base64 are undone; the certificate is checked to begin as a DER SEQUENCE.
    public static func der(fromPEM pem: String) -> Data? {
        let begin = "-----BEGIN CERTIFICATE-----"
        let end = "-----END CERTIFICATE-----"
        guard let start = pem.range(of: begin), let stop = pem.range(of: end, range: start.upperBound..<pem.endIndex) else {
            return nil
        }
        let body = pem[start.upperBound..<stop.lowerBound].filter { !$0.isWhitespace }
        guard let der = Data(base64Encoded: String(body)), der.count > 16, der.first == 0x30 else { return nil }
        return der
    }

    /// `x5t#S256`: base64url of the SHA-256 of the DER.
    public static func sha256(_ der: Data) -> String {
        Base64URL.encode(Data(SHA256.hash(data: der)))
    }

    /// `x5t`: base64url of the SHA-1 of the DER (what older Entra ID documents ask for).
    public static func sha1(_ der: Data) -> String {
        Base64URL.encode(Data(Insecure.SHA1.hash(data: der)))
    }
}
