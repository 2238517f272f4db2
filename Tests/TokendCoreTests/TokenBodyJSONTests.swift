import Foundation
import Testing
import TokendCore
import TokendTestSupport

/// The token body is written by hand (it answers every token request); it must stay byte for byte what
/// `JSONEncoder` with `.sortedKeys` writes, so that clients see no change.
@Suite struct TokenBodyJSONTests {
    static func encoded(_ body: API.TokenBody) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(body)) + [UInt8(ascii: "\n")]
    }

    static func body(_ text: String, scope: String?) -> API.TokenBody {
        API.TokenBody(
            instance: "acme-\(text.count)",
            access_token: text,
            token_type: text.isEmpty ? "Bearer" : "DPoP \(text)",
            expires_at: 1_790_000_000 + text.utf8.count,
            expires_in: text.utf8.count - 3,
            scope: scope
        )
    }

    @Test func everyASCIICharacterIsEscapedAsJSONEncoderEscapesIt() throws {
        for code in 0..<128 {
            let text = "a\(Character(Unicode.Scalar(UInt8(code))))b"
            let body = Self.body(text, scope: code % 2 == 0 ? text : nil)
            #expect(body.json() == (try Self.encoded(body)), "character \(code)")
        }
    }

    @Test func randomStringsWithUnicodeAndSlashesMatchJSONEncoder() throws {
        var random = SeededGenerator(seed: 8)
        let alphabet: [Character] = [
            "a", "Z", "0", "/", "+", "=", "\\", "\"", "\n", "\t", "\u{1}", "\u{1f}", "\u{7f}", "é", "😀", "\u{2028}", "€", " ", ".",
        ]
        for _ in 0..<500 {
            let length = Int.random(in: 0..<40, using: &random)
            let text = String((0..<length).map { _ in alphabet.randomElement(using: &random)! })
            let body = Self.body(text, scope: Bool.random(using: &random) ? nil : String(text.reversed()))
            #expect(body.json() == (try Self.encoded(body)), "\(text.debugDescription)")
        }
    }

    @Test func theRouterAnswersWithTheSameBytes() throws {
        let token = IssuedToken(
            accessToken: Secret("eyJ/abc+def=="),
            tokenType: "Bearer",
            scope: "read write",
            obtainedAt: Date(timeIntervalSince1970: 1_790_000_000),
            expiresAt: Date(timeIntervalSince1970: 1_790_000_100)
        )
        let response = APIRouter().tokenResponse(
            name: "alpha",
            token: token,
            format: .json,
            now: Date(timeIntervalSince1970: 1_790_000_040)
        )
        let expected =
            #"{"access_token":"eyJ\/abc+def==","expires_at":1790000100,"expires_in":60,"instance":"alpha","scope":"read write","token_type":"Bearer"}"#
            + "\n"
        #expect(String(decoding: response.body, as: UTF8.self) == expected)
        #expect(response.contentType == "application/json")
    }
}
