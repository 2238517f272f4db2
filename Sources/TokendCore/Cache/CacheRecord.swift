import Foundation

// swift-format-ignore: AlwaysUseLowerCamelCase
// The property names are the cache file's JSON keys, spelled as in the file.
/// What `<state>/<instance>.json` holds: the token and its times, and the fingerprint of the request definition that
/// obtained it.
///
/// Never the client secret.
public struct CacheRecord: Codable, Sendable, Hashable {
    public static let currentVersion = 1

    public var version: Int
    public var instance: String
    public var access_token: String
    public var token_type: String
    public var scope: String?
    /// Unix epoch seconds.
    public var obtained_at: Double
    public var expires_at: Double
    /// ``ResolvedInstance/fingerprint`` at the time of the fetch.
    public var fingerprint: String
    /// The server's `refresh_in` hint, if any.
    public var refresh_in: Double?

    public init(instance: String, token: IssuedToken, fingerprint: String) {
        self.version = Self.currentVersion
        self.instance = instance
        self.access_token = token.accessToken.revealed
        self.token_type = token.tokenType
        self.scope = token.scope
        self.obtained_at = token.obtainedAt.timeIntervalSince1970
        self.expires_at = token.expiresAt.timeIntervalSince1970
        self.fingerprint = fingerprint
        self.refresh_in = token.refreshIn
    }

    public var token: IssuedToken {
        IssuedToken(
            accessToken: Secret(access_token),
            tokenType: token_type,
            scope: scope,
            obtainedAt: Date(timeIntervalSince1970: obtained_at),
            expiresAt: Date(timeIntervalSince1970: expires_at),
            refreshIn: refresh_in
        )
    }

    /// Encodes the record as JSON bytes.
    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? Array(encoder.encode(self))) ?? []
    }

    /// Decodes and checks a record; nil when the bytes are not one of ours for `instance`.
    public static func decode(_ bytes: [UInt8], instance: String) -> CacheRecord? {
        guard let record = decodeAsWritten(bytes) ?? (try? JSONDecoder().decode(CacheRecord.self, from: Data(bytes))),
            record.version == currentVersion, record.instance == instance, !record.access_token.isEmpty,
            record.expires_at.isFinite, record.obtained_at.isFinite, record.expires_at > record.obtained_at,
            record.expires_at - record.obtained_at <= TokenResponseParser.maxLifetime + 1,
            record.refresh_in.map({ $0.isFinite }) ?? true
        else { return nil }
        return record
    }

    /// The record when `bytes` are exactly as ``encoded()`` writes one (sorted keys, no spaces, no escapes in any
    /// string); nil for anything else, which then goes to `JSONDecoder`.
    ///
    /// At start-up every cache file is read, and for the records tokend writes itself this is far cheaper than
    /// `JSONDecoder`.
    static func decodeAsWritten(_ bytes: [UInt8]) -> CacheRecord? {
        bytes.withUnsafeBufferPointer { buffer -> CacheRecord? in
            var reader = ExactReader(bytes: buffer)
            guard reader.take("{\"access_token\":"), let accessToken = reader.string(),
                reader.take(",\"expires_at\":"), let expiresAt = reader.number(),
                reader.take(",\"fingerprint\":"), let fingerprint = reader.string(),
                reader.take(",\"instance\":"), let instance = reader.string(),
                reader.take(",\"obtained_at\":"), let obtainedAt = reader.number()
            else { return nil }
            var refreshIn: Double?
            if reader.take(",\"refresh_in\":") {
                guard let number = reader.number() else { return nil }
                refreshIn = number
            }
            var scope: String?
            if reader.take(",\"scope\":") {
                guard let text = reader.string() else { return nil }
                scope = text
            }
            guard reader.take(",\"token_type\":"), let tokenType = reader.string(),
                reader.take(",\"version\":"), let version = reader.number(), let whole = Int(exactly: version),
                reader.take("}"), reader.atEnd
            else { return nil }
            return CacheRecord(
                version: whole,
                instance: instance,
                accessToken: accessToken,
                tokenType: tokenType,
                scope: scope,
                obtainedAt: obtainedAt,
                expiresAt: expiresAt,
                fingerprint: fingerprint,
                refreshIn: refreshIn
            )
        }
    }

    private init(
        version: Int,
        instance: String,
        accessToken: String,
        tokenType: String,
        scope: String?,
        obtainedAt: Double,
        expiresAt: Double,
        fingerprint: String,
        refreshIn: Double?
    ) {
        self.version = version
        self.instance = instance
        self.access_token = accessToken
        self.token_type = tokenType
        self.scope = scope
        self.obtained_at = obtainedAt
        self.expires_at = expiresAt
        self.fingerprint = fingerprint
        self.refresh_in = refreshIn
    }
}

/// Reads exact bytes, strings without escapes and numbers, for ``CacheRecord/decodeAsWritten(_:)``.
private struct ExactReader {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0

    var atEnd: Bool { index == bytes.count }

    /// Consumes `literal` if the bytes continue with it.
    mutating func take(_ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard bytes.count - index >= count, let base = bytes.baseAddress,
            memcmp(base + index, literal.utf8Start, count) == 0
        else { return false }
        index += count
        return true
    }

    /// A JSON string with no escape and no control character in it (anything else is left to JSONDecoder).
    mutating func string() -> String? {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
        let start = index + 1
        var end = start
        while end < bytes.count {
            let byte = bytes[end]
            if byte == UInt8(ascii: "\"") { break }
            if byte == UInt8(ascii: "\\") || byte < 0x20 { return nil }
            end += 1
        }
        guard end < bytes.count else { return nil }
        index = end + 1
        // Invalid UTF-8 is refused, as JSONDecoder refuses it.
        return String(validating: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
    }

    /// A JSON number (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`), finite.
    mutating func number() -> Double? {
        let start = index
        func digits() -> Int {
            let first = index
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
            return index - first
        }
        func skip(_ byte: UInt8) -> Bool {
            guard index < bytes.count, bytes[index] == byte else { return false }
            index += 1
            return true
        }
        _ = skip(UInt8(ascii: "-"))
        let integerStart = index
        let integerDigits = digits()
        guard integerDigits > 0, integerDigits == 1 || bytes[integerStart] != UInt8(ascii: "0") else { return nil }
        if skip(UInt8(ascii: ".")), digits() == 0 { return nil }
        if skip(UInt8(ascii: "e")) || skip(UInt8(ascii: "E")) {
            if !skip(UInt8(ascii: "+")) { _ = skip(UInt8(ascii: "-")) }
            if digits() == 0 { return nil }
        }
        guard let value = Double(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)),
            value.isFinite
        else { return nil }
        return value
    }
}
