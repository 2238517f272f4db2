import Crypto
import Foundation

/// What the fleet key does (SPEC §14): names an instance's shared row, seals its token, and proves two hosts hold the
/// same key.
///
/// - The identity is HMAC-SHA256 of the instance name and its request fingerprint: two hosts share a row only when
///   they would send the same request, and the database never sees a name.
/// - The token is sealed with AES-256-GCM, the identity as associated data: a row copied to another identity, or
///   written under another key, does not open.
public struct FleetCodec: Sendable {
    private let key: SymmetricKey

    /// Why a key was refused (never the key itself).
    public struct KeyError: Error, Sendable, Hashable, CustomStringConvertible {
        public var description: String
    }

    /// A key from its text: standard base64 of exactly 32 bytes, surrounding whitespace ignored.
    public static func parse(key text: String) -> Result<FleetCodec, KeyError> {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let bytes = Data(base64Encoded: trimmed) else {
            return .failure(KeyError(description: "the fleet key is not standard base64"))
        }
        guard bytes.count == 32 else {
            return .failure(KeyError(description: "the fleet key is \(bytes.count) bytes; expected 32 (openssl rand -base64 32)"))
        }
        return .success(FleetCodec(key: SymmetricKey(data: bytes)))
    }

    private init(key: SymmetricKey) {
        self.key = key
    }

    /// The shared identity of an instance: 32 bytes.
    public func identity(instance: String, fingerprint: String) -> [UInt8] {
        var message = Array("tokend fleet identity v1".utf8)
        message.append(0)
        message += Array(instance.utf8)
        message.append(0)
        message += Array(fingerprint.utf8)
        return Array(HMAC<SHA256>.authenticationCode(for: message, using: key))
    }

    /// The key-check value stored once per fleet: a host whose key gives another value is not in the fleet.
    public var keyCheck: [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Array("tokend fleet key check v1".utf8), using: key))
    }

    /// The token sealed for the row `identity` (nonce, ciphertext and tag); the request fingerprint is sealed with
    /// it, never the instance name.
    public func seal(_ token: IssuedToken, identity: [UInt8], fingerprint: String) -> [UInt8] {
        let plaintext = CacheRecord(instance: "", token: token, fingerprint: fingerprint).encoded()
        guard let box = try? AES.GCM.seal(plaintext, using: key, authenticating: identity), let combined = box.combined else {
            // AES-GCM with a 32-byte key and a random nonce does not fail.
            preconditionFailure("AES-GCM sealing failed")
        }
        return Array(combined)
    }

    /// The token sealed in `sealed` for the row `identity` and this request `fingerprint`; nil when it does not open
    /// (another key, another row, tampered with) or is not a token of this request.
    public func open(_ sealed: [UInt8], identity: [UInt8], fingerprint: String) -> IssuedToken? {
        guard let box = try? AES.GCM.SealedBox(combined: sealed),
            let plaintext = try? AES.GCM.open(box, using: key, authenticating: identity),
            let record = CacheRecord.decode(Array(plaintext), instance: ""), record.fingerprint == fingerprint
        else { return nil }
        return record.token
    }
}
