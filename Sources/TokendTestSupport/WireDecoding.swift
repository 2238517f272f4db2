import Crypto
import Foundation

/// How the test endpoints read what tokend sends, written here from the RFCs and Foundation, never with tokend's own
/// encoders (TokendCore's `FormURLEncoding`, `Base64URL`, `JSONValue`, `TokenFingerprint`): a bug in those must not
/// be mirrored by the endpoint that checks them, so a wrongly encoded request fails the test instead of decoding
/// back into what the test expects.
public enum WireDecoding {
    /// The fields of an `application/x-www-form-urlencoded` text (WHATWG URL §5.1, as RFC 6749 Appendix B uses it).
    ///
    /// Split at `&`, name and value at the first `=`, `+` is a space, then `%XX` escapes as UTF-8. A pair whose
    /// escapes are broken or whose bytes are not UTF-8 is skipped; empty pairs are skipped.
    public static func formFields(_ text: String) -> [(name: String, value: String)] {
        text.split(separator: "&", omittingEmptySubsequences: true).compactMap { pair in
            let name: Substring
            let value: Substring
            if let equals = pair.firstIndex(of: "=") {
                name = pair[..<equals]
                value = pair[pair.index(after: equals)...]
            } else {
                name = pair
                value = ""
            }
            guard let decodedName = percentDecode(name, plusIsSpace: true),
                let decodedValue = percentDecode(value, plusIsSpace: true)
            else { return nil }
            return (decodedName, decodedValue)
        }
    }

    /// The form fields as a dictionary (a later field of the same name wins).
    public static func formDictionary(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for (name, value) in formFields(text) { fields[name] = value }
        return fields
    }

    /// `%XX` escapes decoded (and `+` as a space when `plusIsSpace`); nil for a `%` not followed by two hex digits or
    /// for bytes that are not UTF-8.
    public static func percentDecode(_ text: Substring, plusIsSpace: Bool) -> String? {
        var bytes: [UInt8] = []
        let input = Array(text.utf8)
        var index = 0
        while index < input.count {
            let byte = input[index]
            if byte == 0x25 {  // %
                guard index + 2 < input.count, let high = hexValue(input[index + 1]), let low = hexValue(input[index + 2])
                else { return nil }
                bytes.append(high * 16 + low)
                index += 3
            } else {
                bytes.append(plusIsSpace && byte == 0x2B ? 0x20 : byte)
                index += 1
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    /// The client id and secret of an `Authorization: Basic` header, decoded as RFC 6749 §2.3.1 says a server does:
    /// base64 (RFC 4648 §4, padding required), split at the first `:`, then each side form-url-decoded.
    public static func basicCredentials(_ authorization: String) -> (id: String, secret: String)? {
        let prefix = "Basic "
        guard authorization.count > prefix.count, authorization.lowercased().hasPrefix("basic ") else { return nil }
        let encoded = authorization.dropFirst(prefix.count)
        guard let data = Data(base64Encoded: String(encoded)), let pair = String(data: data, encoding: .utf8),
            let colon = pair.firstIndex(of: ":"),
            let id = percentDecode(pair[..<colon], plusIsSpace: true),
            let secret = percentDecode(pair[pair.index(after: colon)...], plusIsSpace: true)
        else { return nil }
        return (id, secret)
    }

    /// base64url without padding (RFC 7515 §2, RFC 4648 §5): nil for any other character, for padding, or for a
    /// length no encoding produces.
    public static func base64URL(_ text: Substring) -> Data? {
        var bits: UInt32 = 0
        var count = 0
        var bytes: [UInt8] = []
        for byte in text.utf8 {
            let value: UInt8
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): value = 62
            case UInt8(ascii: "_"): value = 63
            default: return nil
            }
            bits = bits << 6 | UInt32(value)
            count += 6
            if count >= 8 {
                count -= 8
                bytes.append(UInt8(truncatingIfNeeded: bits >> UInt32(count)))
                bits &= (1 << UInt32(count)) - 1
            }
        }
        // 1 leftover character (6 bits) is never produced; leftover bits must be zero.
        guard count < 6, bits == 0 else { return nil }
        return Data(bytes)
    }

    /// base64url without padding of `data`, for tests that build a JWT by hand.
    public static func base64URLEncoded(_ data: Data) -> String {
        var text = data.base64EncodedString()
        text = String(text.map { $0 == "+" ? "-" : $0 == "/" ? "_" : $0 })
        while text.hasSuffix("=") { text.removeLast() }
        return text
    }

    /// A JSON object parsed by Foundation's `JSONSerialization`; nil when the text is not a JSON object.
    public static func jsonObject(_ bytes: some Collection<UInt8>) -> [String: TestJSON]? {
        guard let parsed = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]),
            case .object(let object) = TestJSON(foundation: parsed)
        else { return nil }
        return object
    }

    /// What RFC 6749 §2.3.1 and SPEC §3 say tokend sends: every byte outside the unreserved set (`A-Z a-z 0-9 - .
    ///
    /// _ ~`) as `%XX` (upper-case hex), a space as `%20`. For the secrets audit, which looks for a secret's encoded
    /// spelling too.
    public static func formEncode(_ text: String) -> String {
        let unreserved = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8)
        var out = ""
        for byte in text.utf8 {
            if unreserved.contains(byte) {
                out.append(Character(Unicode.Scalar(byte)))
            } else {
                out += "%" + String(format: "%02X", byte)
            }
        }
        return out
    }

    /// The first 16 hex digits of SHA-256 of `token`: how SPEC §8 names a token (fingerprints in the status and in
    /// `invalidate`), computed here with swift-crypto rather than with tokend's `TokenFingerprint`.
    public static func fingerprint(_ token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// A JSON value as the test endpoints see it, converted from what Foundation's `JSONSerialization` returns.
public enum TestJSON: Sendable, Hashable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case null
    case array([TestJSON])
    case object([String: TestJSON])

    /// `value` as `JSONSerialization` returns it (NSString, NSNumber, NSArray, NSDictionary, NSNull).
    public init?(foundation value: Any) {
        switch value {
        case let text as String:
            self = .string(text)
        case let number as NSNumber:
            // JSONSerialization gives booleans as NSNumber too, of ObjC type `c` (numbers are `i`, `q` or `d`).
            if String(cString: number.objCType) == "c" {
                self = .bool(number.boolValue)
            } else {
                self = .number(number.doubleValue)
            }
        case let array as [Any]:
            var items: [TestJSON] = []
            for item in array {
                guard let converted = TestJSON(foundation: item) else { return nil }
                items.append(converted)
            }
            self = .array(items)
        case let dictionary as [String: Any]:
            var object: [String: TestJSON] = [:]
            for (key, item) in dictionary {
                guard let converted = TestJSON(foundation: item) else { return nil }
                object[key] = converted
            }
            self = .object(object)
        case is NSNull:
            self = .null
        default:
            return nil
        }
    }
}
