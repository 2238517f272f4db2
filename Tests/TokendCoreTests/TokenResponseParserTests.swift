import Foundation
import Testing

@testable import TokendCore

@Suite struct TokenResponseParserTests {
    func parse(
        _ body: String,
        status: Int = 200,
        retryAfter: String? = nil,
        shape: TokenResponseParser.Shape = .init()
    ) -> Result<IssuedToken, FetchFailure> {
        TokenResponseParser.parse(status: status, body: Array(body.utf8), retryAfter: retryAfter, shape: shape, now: epoch)
    }

    @Test func readsTokenTypeScopeAndLifetime() throws {
        let token = try parse(#"{"access_token":"abc","token_type":"bearer","expires_in":3600,"scope":"read"}"#).get()
        #expect(token.accessToken.revealed == "abc")
        #expect(token.tokenType == "bearer")
        #expect(token.scope == "read")
        #expect(token.expiresAt == epoch.addingTimeInterval(3600))
    }

    @Test func expiresInAsAStringAndTokenTypeDefault() throws {
        let token = try parse(#"{"access_token":"abc","expires_in":"120"}"#).get()
        #expect(token.lifetime == 120)
        #expect(token.tokenType == "Bearer")
    }

    @Test func nestedKeys() throws {
        let shape = TokenResponseParser.Shape(tokenKey: "data.token", expiresInKey: "data.ttl")
        let token = try parse(#"{"data":{"token":"xyz","ttl":60}}"#, shape: shape).get()
        #expect(token.accessToken.revealed == "xyz")
        #expect(token.lifetime == 60)
    }

    @Test func expiresAtAsEpochAndRFC3339() throws {
        let shape = TokenResponseParser.Shape(expiresAtKey: "expires_at")
        let epochForm = try parse(#"{"access_token":"a","expires_at":\#(Int(epoch.timeIntervalSince1970) + 90)}"#, shape: shape).get()
        #expect(epochForm.lifetime == 90)
        let rfc = RFC3339.format(epoch.addingTimeInterval(300))
        let textForm = try parse(#"{"access_token":"a","expires_at":"\#(rfc)"}"#, shape: shape).get()
        #expect(textForm.lifetime == 300)
    }

    @Test func jwtExpIsTheFallback() throws {
        func b64(_ text: String) -> String {
            Data(text.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        }
        let jwt = b64(#"{"alg":"none"}"#) + "." + b64(#"{"exp":\#(Int(epoch.timeIntervalSince1970) + 500)}"#) + ".sig"
        let token = try parse(#"{"access_token":"\#(jwt)"}"#).get()
        #expect(token.lifetime == 500)
    }

    @Test func defaultTTLWhenNothingElse() throws {
        let token = try parse(#"{"access_token":"a"}"#, shape: .init(defaultTTL: 900)).get()
        #expect(token.lifetime == 900)
    }

    @Test func noLifetimeIsAPermanentClearError() {
        guard case .failure(let failure) = parse(#"{"access_token":"a"}"#) else {
            Issue.record("expected failure")
            return
        }
        #expect(failure.kind == .permanent)
        #expect(failure.code == "no_lifetime")
    }

    @Test(arguments: [
        (400, #"{"error":"invalid_client"}"#, FetchFailure.Kind.permanent, "invalid_client"),
        (400, #"{"error":"invalid_scope","error_description":"nope"}"#, .permanent, "invalid_scope"),
        (401, "", .permanent, "http_401"),
        (403, "", .permanent, "http_403"),
        (500, "", .transient, "http_500"),
        (503, "<html>down</html>", .transient, "http_503"),
        (429, #"{"error":"slow_down"}"#, .transient, "slow_down"),
        (200, "<html>login</html>", .transient, "invalid_response"),
        (200, "", .transient, "invalid_response"),
        (200, #"{"token":"x"}"#, .transient, "invalid_response"),
        (200, #"{"access_token":"a","expires_in":0}"#, .transient, "invalid_response"),
        (200, #"{"access_token":"a","expires_in":"soon"}"#, .transient, "invalid_response"),
    ])
    func classifiesFailures(_ status: Int, _ body: String, _ kind: FetchFailure.Kind, _ code: String) {
        guard case .failure(let failure) = parse(body, status: status) else {
            Issue.record("expected failure")
            return
        }
        #expect(failure.kind == kind)
        #expect(failure.code == code)
    }

    @Test func htmlBodyIsQuotedInTheMessage() {
        guard case .failure(let failure) = parse("<html>\n<b>Bad gateway</b></html>", status: 502) else {
            Issue.record("expected failure")
            return
        }
        #expect(failure.message == "HTTP 502: \"<html> <b>Bad gateway</b></html>\"")
    }

    @Test func retryAfterSecondsAndDate() {
        guard case .failure(let seconds) = parse("", status: 429, retryAfter: "7") else {
            Issue.record("a 429 was accepted")
            return
        }
        #expect(seconds.retryAfter == 7)
        guard case .failure(let date) = parse("", status: 503, retryAfter: "Fri, 15 Jan 2027 08:00:30 GMT") else {
            Issue.record("a 503 was accepted")
            return
        }
        let expected = Date(timeIntervalSince1970: 1_800_000_030).timeIntervalSince(epoch)
        #expect(date.retryAfter.map { abs($0 - expected) < 1 } == true)
    }
}

@Suite struct FailureRedactionTests {
    @Test func secretsEchoedByTheProviderAreRedacted() {
        let failure = FetchFailure(kind: .transient, code: "http_500", message: "HTTP 500: \"client_secret=p%2Bw and p+w\"")
        let redacted = failure.redacting(["p+w", "longer+secret"])
        #expect(redacted.message == failure.message, "secrets shorter than 4 bytes are not scrubbed (too many false hits)")
        let real = FetchFailure(kind: .transient, code: "http_500", message: "HTTP 500: \"client_secret=s3cr%2Bt and s3cr+t\"")
        #expect(real.redacting(["s3cr+t"]).message == "HTTP 500: \"client_secret=<redacted> and <redacted>\"")
    }

    @Test func requestedScopeFillsAnOmittedScope() throws {
        let token = try TokenResponseParser.parse(
            status: 200,
            body: Array(#"{"access_token":"a","expires_in":60}"#.utf8),
            shape: .init(),
            requestedScope: "read",
            now: epoch
        ).get()
        #expect(token.scope == "read")
    }
}
