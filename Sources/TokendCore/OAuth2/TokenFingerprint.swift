import Crypto
import Foundation

/// The short name of a token: the first 16 hex digits of its SHA-256.
public enum TokenFingerprint {
    public static func of(_ token: Secret) -> String {
        String(TokenRequestBuilder.hex(SHA256.hash(data: Data(token.revealed.utf8))).prefix(16))
    }
}
