import Foundation
import Testing
import TokendCore
import TokendTestSupport

/// The test endpoints' own decoders (TokendTestSupport's `WireDecoding`) held to the RFCs' rules and examples, and
/// tokend's form encoder held to them: what tokend writes must read back through a decoder that is not tokend's.
@Suite struct WireDecodingTests {
    @Test func formFieldsFollowTheFormRules() {
        let fields = WireDecoding.formFields("a=1&b=x+y%20z&c=%C3%A9&d&=e&&f=a=b")
        #expect(fields.map { "\($0.name)=\($0.value)" } == ["a=1", "b=x y z", "c=é", "d=", "=e", "f=a=b"])
        // A broken escape or bytes that are not UTF-8 make the pair unreadable; the others stay.
        #expect(WireDecoding.formDictionary("a=%2&b=2") == ["b": "2"])
        #expect(WireDecoding.formDictionary("a=%zz&b=2") == ["b": "2"])
        #expect(WireDecoding.formDictionary("a=%FF&b=2") == ["b": "2"])
        #expect(WireDecoding.percentDecode("a+b", plusIsSpace: false) == "a+b")
    }

    @Test func basicCredentialsAreBase64ThenFormDecoded() {
        // RFC 7617 §2's example.
        let aladdin = WireDecoding.basicCredentials("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        #expect(aladdin?.id == "Aladdin" && aladdin?.secret == "open sesame")
        // RFC 6749 §2.3.1: each side form-url-decoded after the split at the first colon.
        let encoded = WireDecoding.basicCredentials("Basic " + Data("a%3Ab:c%20d+e%3A".utf8).base64EncodedString())
        #expect(encoded?.id == "a:b" && encoded?.secret == "c d e:")
        #expect(WireDecoding.basicCredentials("Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==") == nil)
        #expect(WireDecoding.basicCredentials("Basic not base64!") == nil)
        #expect(WireDecoding.basicCredentials("Basic " + Data("no-colon".utf8).base64EncodedString()) == nil)
    }

    @Test func base64URLIsStrict() {
        #expect(WireDecoding.base64URL("eyJhIjoxfQ") == Data(#"{"a":1}"#.utf8))
        #expect(WireDecoding.base64URL("eyJhIjoxfQ==") == nil, "padding")
        #expect(WireDecoding.base64URL("a+b/") == nil, "the standard alphabet")
        #expect(WireDecoding.base64URL("A") == nil, "a length no encoding has")
        #expect(WireDecoding.base64URL("AB") == nil, "leftover bits that are not zero")
        for length in 0...64 {
            let data = Data((0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) })
            #expect(WireDecoding.base64URL(WireDecoding.base64URLEncoded(data)[...]) == data, "\(length) bytes")
        }
    }

    @Test func jsonKeepsBooleansNumbersAndStringsApart() {
        let object = WireDecoding.jsonObject(Array(#"{"s":"x","n":1,"f":1.5,"t":true,"z":null,"a":[0,"b"],"o":{"k":false}}"#.utf8))
        #expect(
            object == [
                "s": .string("x"), "n": .number(1), "f": .number(1.5), "t": .bool(true), "z": .null,
                "a": .array([.number(0), .string("b")]), "o": .object(["k": .bool(false)]),
            ]
        )
        #expect(WireDecoding.jsonObject(Array("[1]".utf8)) == nil)
        #expect(WireDecoding.jsonObject(Array("{".utf8)) == nil)
    }

    @Test func theFingerprintIsSHA256sFirstSixteenHexDigits() {
        // FIPS 180-2's test vector for "abc".
        #expect(WireDecoding.fingerprint("abc") == "ba7816bf8f01cfea")
    }

    /// tokend's form encoder against this decoder over seeded strings of every kind: what tokend writes reads back as
    /// what it was given, and it escapes exactly what RFC 6749 §2.3.1 and SPEC §3 say (a space as `%20`).
    @Test func tokendsFormEncodingReadsBackThroughTheIndependentDecoder() {
        var generator = SeededGenerator(seed: 0xF0F0)
        let alphabet = Array("abcXYZ019-._~ +&=%/?#:@!$'()*,;[]\"\\é€😀\u{0}\u{7F}\n\t")
        for _ in 0..<2_000 {
            let text = String((0..<Int.random(in: 0...24, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! })
            let encoded = FormURLEncoding.encode(text)
            #expect(encoded == WireDecoding.formEncode(text), "\(text.debugDescription)")
            #expect(WireDecoding.percentDecode(encoded[...], plusIsSpace: true) == text, "\(text.debugDescription)")
            #expect(WireDecoding.percentDecode(encoded[...], plusIsSpace: false) == text, "\(text.debugDescription)")
            let body = FormURLEncoding.encode(fields: [("k", text), ("x", "1")])
            #expect(WireDecoding.formDictionary(body) == ["k": text, "x": "1"], "\(text.debugDescription)")
        }
    }
}
