import Crypto
import Foundation
import _CryptoExtras

/// Decodes a compact JWS client assertion and checks its signature with a public key (RS256, ES256) or a shared secret
/// (HS256): what an authorization server does with `private_key_jwt` and `client_secret_jwt`.
///
/// The base64url and JSON decoding are ``WireDecoding``'s, not tokend's.
public struct DecodedAssertion: Sendable {
    public var header: [String: TestJSON]
    public var claims: [String: TestJSON]
    public var signature: Data
    public var signingInput: String

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public init(_ jwt: String) throws {
        let parts = jwt.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let header = WireDecoding.base64URL(parts[0]), let claims = WireDecoding.base64URL(parts[1]),
            let signature = WireDecoding.base64URL(parts[2]),
            let headerObject = WireDecoding.jsonObject(header),
            let claimsObject = WireDecoding.jsonObject(claims)
        else { throw Invalid(description: "not a compact JWS with JSON header and claims") }
        self.header = headerObject
        self.claims = claimsObject
        self.signature = signature
        self.signingInput = "\(parts[0]).\(parts[1])"
    }

    public func string(_ claim: String) -> String? {
        if case .string(let text)? = claims[claim] { return text }
        return nil
    }

    public func number(_ claim: String) -> Double? {
        if case .number(let value)? = claims[claim] { return value }
        return nil
    }

    public var algorithm: String? {
        if case .string(let text)? = header["alg"] { return text }
        return nil
    }

    /// Whether the signature verifies with this PEM public key (RSA → RS256 or PS256, EC P-256 → ES256,
    /// Ed25519 → EdDSA), by the algorithm the header names.
    public func verifies(publicKeyPEM pem: String) -> Bool {
        let input = Data(signingInput.utf8)
        if algorithm == "ES256", let key = try? P256.Signing.PublicKey(pemRepresentation: pem),
            let ecdsa = try? P256.Signing.ECDSASignature(rawRepresentation: signature)
        {
            return key.isValidSignature(ecdsa, for: input)
        }
        if algorithm == "RS256" || algorithm == "PS256", let key = try? _RSA.Signing.PublicKey(pemRepresentation: pem) {
            let padding: _RSA.Signing.Padding = algorithm == "PS256" ? .PSS : .insecurePKCS1v1_5
            return key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: input, padding: padding)
        }
        if algorithm == "EdDSA", let key = try? Curve25519.Signing.PublicKey(pemRepresentation: pem) {
            return key.isValidSignature(signature, for: input)
        }
        return false
    }

    /// A header field as text.
    public func headerString(_ field: String) -> String? {
        if case .string(let text)? = header[field] { return text }
        return nil
    }

    /// What the `x5t#S256` header must be for a certificate: base64url (no padding) of the SHA-256 of its DER.
    public static func thumbprintSHA256(der: Data) -> String {
        WireDecoding.base64URLEncoded(Data(SHA256.hash(data: der)))
    }

    /// What the `x5t` header must be: base64url of the SHA-1 of the DER.
    public static func thumbprintSHA1(der: Data) -> String {
        WireDecoding.base64URLEncoded(Data(Insecure.SHA1.hash(data: der)))
    }

    /// Whether an HS256 signature verifies with this secret.
    public func verifies(secret: String) -> Bool {
        algorithm == "HS256"
            && HMAC<SHA256>.isValidAuthenticationCode(
                signature,
                authenticating: Data(signingInput.utf8),
                using: SymmetricKey(data: Data(secret.utf8))
            )
    }

    /// What a server checks: signature, `iss` = `sub` = client id, `aud`, a `jti`, and `exp` after `now`; nil when
    /// all hold, else the first that does not.
    public func problem(publicKeyPEM: String, clientID: String, audience: String, now: Date = Date()) -> String? {
        if !verifies(publicKeyPEM: publicKeyPEM) { return "signature does not verify" }
        if string("iss") != clientID || string("sub") != clientID { return "iss/sub is not the client id" }
        if string("aud") != audience { return "aud is \(string("aud") ?? "missing"), not \(audience)" }
        if (string("jti") ?? "").isEmpty { return "no jti" }
        guard let exp = number("exp"), exp > now.timeIntervalSince1970 else { return "expired or no exp" }
        return nil
    }
}
