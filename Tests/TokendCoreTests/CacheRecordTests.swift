import Foundation
import Testing
import TokendTestSupport

@testable import TokendCore

/// The cache record's fast reader of its own format agrees with JSONDecoder: on every record tokend writes, and on
/// damaged ones, where it either gives up (JSONDecoder then decides) or reads what JSONDecoder reads.
@Suite struct CacheRecordTests {
    static func randomText(_ generator: inout SeededGenerator, alphabet: [Character], length: ClosedRange<Int>) -> String {
        String((0..<Int.random(in: length, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! })
    }

    static func randomRecord(_ generator: inout SeededGenerator, escapes: Bool) -> CacheRecord {
        let plain = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+=:é€😀")
        let awkward = plain + Array("\"\\/\n\t\u{01}\u{7F}")
        let alphabet = escapes ? awkward : plain
        let obtained =
            Double.random(in: 0...4_000_000_000, using: &generator).rounded(.down)
            + [0, 0.5, 0.123456789, Double.random(in: 0..<1, using: &generator)].randomElement(using: &generator)!
        let lifetime = [1, 60, 3600, 86_400 * 366].randomElement(using: &generator)! * Double.random(in: 0.1...1, using: &generator) + 1
        let token = IssuedToken(
            accessToken: Secret(randomText(&generator, alphabet: alphabet, length: 1...300)),
            tokenType: Bool.random(using: &generator) ? "Bearer" : randomText(&generator, alphabet: alphabet, length: 0...10),
            scope: Bool.random(using: &generator) ? nil : randomText(&generator, alphabet: alphabet, length: 0...40),
            obtainedAt: Date(timeIntervalSince1970: obtained),
            expiresAt: Date(timeIntervalSince1970: obtained + lifetime),
            refreshIn: Bool.random(using: &generator) ? nil : lifetime * 0.8
        )
        return CacheRecord(
            instance: randomText(&generator, alphabet: Array("abcxyz019_-."), length: 1...30),
            token: token,
            fingerprint: randomText(&generator, alphabet: Array("0123456789abcdef"), length: 64...64)
        )
    }

    static func viaJSONDecoder(_ bytes: [UInt8]) -> CacheRecord? {
        try? JSONDecoder().decode(CacheRecord.self, from: Data(bytes))
    }

    @Test func everyRecordTokendWritesWithoutEscapesIsReadFastAndAsJSONDecoderReadsIt() throws {
        var generator = SeededGenerator(seed: 81)
        for _ in 0..<2_000 {
            let record = Self.randomRecord(&generator, escapes: false)
            let bytes = record.encoded()
            let fast = try #require(CacheRecord.decodeAsWritten(bytes), "\(String(decoding: bytes, as: UTF8.self))")
            #expect(fast == record)
            #expect(fast == Self.viaJSONDecoder(bytes))
            #expect(CacheRecord.decode(bytes, instance: record.instance) == record)
        }
    }

    @Test func recordsWithEscapesAreLeftToJSONDecoder() {
        var generator = SeededGenerator(seed: 82)
        var declined = 0
        for _ in 0..<2_000 {
            let record = Self.randomRecord(&generator, escapes: true)
            let bytes = record.encoded()
            if let fast = CacheRecord.decodeAsWritten(bytes) {
                #expect(fast == Self.viaJSONDecoder(bytes))
            } else {
                declined += 1
            }
            #expect(CacheRecord.decode(bytes, instance: record.instance) == record)
        }
        #expect(declined > 1_000)
    }

    @Test func aDamagedRecordIsReadAsJSONDecoderReadsItOrNotAtAll() {
        var generator = SeededGenerator(seed: 83)
        var readFast = 0
        let replacements = Array("0123456789-+.eE\"\\,:{}[] \nx".utf8)
        for _ in 0..<20_000 {
            var bytes = Self.randomRecord(&generator, escapes: false).encoded()
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let at = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes.remove(at: at)
                case 1: bytes[at] = replacements.randomElement(using: &generator)!
                default: bytes.insert(replacements.randomElement(using: &generator)!, at: at)
                }
            }
            if let fast = CacheRecord.decodeAsWritten(bytes) {
                readFast += 1
                #expect(fast == Self.viaJSONDecoder(bytes), "\(String(decoding: bytes, as: UTF8.self))")
            }
        }
        // Most damage lands in a token or a number and still reads; the comparison above has cases to check.
        #expect(readFast > 1_000)
    }
}
