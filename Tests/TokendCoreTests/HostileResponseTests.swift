import Foundation
import Testing
import TokendTestSupport

@testable import TokendCore

/// What a misbehaving token endpoint can send that must neither crash tokend nor make it serve a dead token
/// (regressions from the issue #9 fault matrix).
@Suite struct HostileResponseTests {
    func parse(_ body: String, status: Int = 200, retryAfter: String? = nil) -> Result<IssuedToken, FetchFailure> {
        TokenResponseParser.parse(status: status, body: Array(body.utf8), retryAfter: retryAfter, shape: .init(), now: epoch)
    }

    func jwt(exp: Double) -> String {
        func base64URL(_ text: String) -> String {
            Data(text.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        }
        return base64URL(#"{"alg":"none"}"#) + "." + base64URL(#"{"exp":\#(exp)}"#) + ".sig"
    }

    @Test(arguments: ["1e300", "9223372036854775807", "\"1e308\"", "31622400000"])
    func aHugeExpiresInIsCutToTheMaximumLifetime(_ raw: String) throws {
        let token = try parse(#"{"access_token":"abc","expires_in":\#(raw)}"#).get()
        #expect(token.lifetime == TokenResponseParser.maxLifetime)
        // Every integer the API and the logs derive from it fits.
        #expect(Int(exactly: token.expiresAt.timeIntervalSince1970.rounded()) != nil)
    }

    @Test(arguments: ["0", "-30", "\"soon\"", "\"inf\"", "\"nan\"", "true", "null", "[]", "{}"])
    func aBadExpiresInIsAnInvalidResponse(_ raw: String) {
        let result = parse(#"{"access_token":"abc","expires_in":\#(raw)}"#)
        if raw == "null" {
            // null is absent: no lifetime at all.
            #expect(result.failureCode == "no_lifetime")
        } else {
            #expect(result.failureCode == "invalid_response", "\(raw)")
        }
    }

    @Test func aJWTWhoseExpComesFirstWinsOverExpiresIn() throws {
        let token = try parse(#"{"access_token":"\#(jwt(exp: epoch.timeIntervalSince1970 + 30))","expires_in":3600}"#).get()
        #expect(token.lifetime == 30)
        let later = try parse(#"{"access_token":"\#(jwt(exp: epoch.timeIntervalSince1970 + 7200))","expires_in":3600}"#).get()
        #expect(later.lifetime == 3600)
        let absurd = try parse(#"{"access_token":"\#(jwt(exp: 1e300))"}"#).get()
        #expect(absurd.lifetime == TokenResponseParser.maxLifetime)
    }

    @Test func aJWTThatHasAlreadyExpiredIsRefusedWhateverExpiresInSays() {
        let result = parse(#"{"access_token":"\#(jwt(exp: epoch.timeIntervalSince1970 - 10))","expires_in":3600}"#)
        #expect(result.failureCode == "invalid_response")
    }

    @Test func anAbsurdExpiresAtIsCutOrRefused() throws {
        let shape = TokenResponseParser.Shape(expiresAtKey: "expires_at")
        let huge = TokenResponseParser.parse(
            status: 200,
            body: Array(#"{"access_token":"a","expires_at":1e300}"#.utf8),
            shape: shape,
            now: epoch
        )
        #expect(try huge.get().lifetime == TokenResponseParser.maxLifetime)
        let infinite = TokenResponseParser.parse(
            status: 200,
            body: Array(#"{"access_token":"a","expires_at":"inf"}"#.utf8),
            shape: shape,
            now: epoch
        )
        #expect(infinite.failureCode == "invalid_response")
    }

    @Test(arguments: [
        "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type", "invalid_scope",
    ])
    func everyRFC6749ErrorCodeIsPermanent(_ code: String) {
        let result = parse(#"{"error":"\#(code)"}"#, status: code == "invalid_client" ? 401 : 400)
        guard case .failure(let failure) = result else {
            Issue.record("accepted an error response")
            return
        }
        #expect(failure.code == code)
        #expect(failure.kind == .permanent)
    }

    @Test func aHugeRetryAfterIsCutToADay() {
        #expect(RetryAfter.seconds(from: "9223372036854775807", now: epoch) == RetryAfter.maxSeconds)
        #expect(RetryAfter.seconds(from: "Fri, 31 Dec 9999 23:59:59 GMT", now: epoch) == RetryAfter.maxSeconds)
        #expect(RetryAfter.seconds(from: "99999999999999999999999", now: epoch) == nil)
        #expect(RetryAfter.seconds(from: "-5", now: epoch) == nil)
    }

    /// A provider that echoes the request: the secret is scrubbed before the message is clipped at 200
    /// characters, so not even its first half survives the cut.
    @Test(arguments: [true, false])
    func anEchoedSecretIsScrubbedBeforeTheMessageIsClipped(_ oauth: Bool) {
        let secret = "SECRET-straddling-the-cut-0123456789"
        let echoed = String(repeating: "x", count: 185) + "client_secret=" + FormURLEncoding.encode(secret) + "&more"
        let body = oauth ? #"{"error":"invalid_request","error_description":"\#(echoed)"}"# : echoed
        let result = TokenResponseParser.parse(status: 400, body: Array(body.utf8), shape: .init(), secrets: [secret], now: epoch)
        guard case .failure(let failure) = result else {
            Issue.record("accepted")
            return
        }
        #expect(!failure.message.contains(secret.prefix(8)), "\(failure.message)")
    }

    /// No byte of a 2xx body that is not a JSON object reaches the failure's message (issue #18, finding 9).
    ///
    /// Such a body may still hold the token (form-encoded, bare text, truncated JSON), and the message goes to the log,
    /// `/v1/instances` and `tokend status`. What is said instead: the size and what the body looks like.
    @Test(arguments: [
        ("access_token=tok-LEAKED-0123456789&token_type=bearer&expires_in=3600", "form-encoded"),
        ("tok-LEAKED-0123456789", "text"),
        (#"{"access_token":"tok-LEAKED-0123456789","expires_in":36"#, "JSON"),
        (#"["tok-LEAKED-0123456789"]"#, "JSON"),
        ("<html><body>token: tok-LEAKED-0123456789</body></html>", "HTML"),
        ("\n\n  tok-LEAKED-0123456789\n", "text"),
    ])
    func aNonJSONSuccessNeverPutsBodyBytesInTheMessage(_ body: String, _ looksLike: String) {
        let result = parse(body, status: 200)
        guard case .failure(let failure) = result else {
            Issue.record("accepted")
            return
        }
        #expect(failure.code == "invalid_response")
        #expect(failure.kind == .transient)
        #expect(!failure.message.contains("LEAKED"), "\(failure.message)")
        #expect(!failure.message.contains("0123456789"), "\(failure.message)")
        #expect(failure.message.contains("\(body.utf8.count) bytes"), "\(failure.message)")
        #expect(failure.message.contains(looksLike), "\(failure.message)")
    }

    @Test func anEmptySuccessSaysSo() {
        guard case .failure(let failure) = parse("", status: 204) else {
            Issue.record("accepted")
            return
        }
        #expect(failure.message == "HTTP 204 with an empty body")
    }

    @Test func aCacheRecordWithAnAbsurdLifetimeIsNotOurs() {
        let good = CacheRecord(instance: "a", token: token(lifetime: 60), fingerprint: "f")
        #expect(CacheRecord.decode(good.encoded(), instance: "a") != nil)
        var absurd = good
        absurd.expires_at = 1e300
        #expect(CacheRecord.decode(absurd.encoded(), instance: "a") == nil)
        var backwards = good
        backwards.obtained_at = -1e300
        #expect(CacheRecord.decode(backwards.encoded(), instance: "a") == nil)
    }

    @Test func retryAfterIsHonouredEvenWhenItReachesPastTheOutageBudget() {
        var settings = RefreshSettings()
        settings.jitter = 0
        settings.retryInitial = 1
        var generator = SeededGenerator(seed: 3)
        var machine = InstanceStateMachine(policy: RefreshPolicy(settings))
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        _ = machine.receivedAndStored(token(lifetime: 100), using: &generator)
        let now = epoch.addingTimeInterval(80)
        _ = machine.timerFired(now: now)
        // serveUntil is epoch + 95; the server asked for 30 s: it is not asked again at 95.
        let slowDown = FetchFailure(kind: .transient, code: "http_429", message: "", retryAfter: 30)
        _ = machine.fetchFailed(slowDown, now: now, using: &generator)
        #expect(machine.nextAttempt == now.addingTimeInterval(30))
    }
}

extension Result where Failure == FetchFailure {
    var failureCode: String? {
        if case .failure(let failure) = self { return failure.code }
        return nil
    }
}
