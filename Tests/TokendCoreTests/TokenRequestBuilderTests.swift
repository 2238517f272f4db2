import Crypto
import Foundation
import Testing
import TokendTestSupport

@testable import TokendCore

@Suite struct TokenRequestBuilderTests {
    @Test func hexIsLowercaseSHA256() {
        // FIPS 180-2 test vector for "abc".
        #expect(
            TokenRequestBuilder.hex(SHA256.hash(data: Data("abc".utf8)))
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )
        #expect(TokenFingerprint.of(Secret("abc")) == "ba7816bf8f01cfea")
    }

    func definition(_ auth: String, url: String = "http://127.0.0.1:9101/token", extra: String = "") throws -> InstanceDefinition {
        let text = """
            token_url = "\(url)"
            client_auth = "\(auth)"
            \(extra)
            [variables]
            client_id = { file = "/s/id" }
            client_secret = { file = "/s/secret" }
            scope = "read write"
            """
        let (parsed, diagnostics) = parseInstance(text)
        #expect(diagnostics.filter { $0.severity == .error }.isEmpty, "\(diagnostics)")
        return try #require(parsed)
    }

    static let awkwardID = "client id+/=:%&"
    static let awkwardSecret = "p+a/s=s:w%o rd&é"

    @Test func clientSecretBasicEncodesIdAndSecretBeforeBase64() throws {
        let resolved = try TokenRequestBuilder.resolve(
            definition("client_secret_basic"),
            values: ["client_id": Secret(Self.awkwardID), "client_secret": Secret(Self.awkwardSecret), "scope": Secret("read write")]
        ).get()
        let request = resolved.request
        let authorization = try #require(request.headers.first { $0.name == "Authorization" }?.value)
        #expect(authorization.hasPrefix("Basic "))
        let decoded = String(decoding: try #require(Data(base64Encoded: String(authorization.dropFirst(6)))), as: UTF8.self)
        #expect(decoded == "client%20id%2B%2F%3D%3A%25%26:p%2Ba%2Fs%3Ds%3Aw%25o%20rd%26%C3%A9")
        #expect(String(decoding: request.body, as: UTF8.self) == "grant_type=client_credentials&scope=read%20write")
        #expect(request.headers.contains(.init("Content-Type", "application/x-www-form-urlencoded")))
        #expect(request.method == "POST")
        #expect(request.url == "http://127.0.0.1:9101/token")
    }

    @Test func rawBasicEncodingLeavesCredentialsAlone() throws {
        let resolved = try TokenRequestBuilder.resolve(
            definition("client_secret_basic", extra: "basic_encoding = \"raw\""),
            values: ["client_id": Secret("id"), "client_secret": Secret("a:b c")]
        ).get()
        let authorization = try #require(resolved.request.headers.first { $0.name == "Authorization" }?.value)
        #expect(authorization == "Basic " + Data("id:a:b c".utf8).base64EncodedString())
    }

    @Test func clientSecretPutsCredentialsInTheFormBody() throws {
        let resolved = try TokenRequestBuilder.resolve(
            definition("client_secret_post"),
            values: ["client_id": Secret(Self.awkwardID), "client_secret": Secret(Self.awkwardSecret), "scope": Secret("read write")]
        ).get()
        let body = String(decoding: resolved.request.body, as: UTF8.self)
        #expect(
            body == "grant_type=client_credentials&scope=read%20write&client_id=client%20id%2B%2F%3D%3A%25%26"
                + "&client_secret=p%2Ba%2Fs%3Ds%3Aw%25o%20rd%26%C3%A9"
        )
        // Read back as a provider would (not with tokend's own decoder).
        let decoded = WireDecoding.formDictionary(body)
        #expect(decoded["client_secret"] == Self.awkwardSecret)
        #expect(decoded["client_id"] == Self.awkwardID)
        #expect(!resolved.request.headers.contains { $0.name == "Authorization" })
    }

    @Test func jsonBodyCarriesTheSameFields() throws {
        let resolved = try TokenRequestBuilder.resolve(
            definition("client_secret_post", extra: "content_type = \"application/json\""),
            values: ["client_id": Secret("id"), "client_secret": Secret("s\"x"), "scope": Secret("read write")]
        ).get()
        let object = try JSONDecoder().decode([String: String].self, from: Data(resolved.request.body))
        #expect(object == ["grant_type": "client_credentials", "scope": "read write", "client_id": "id", "client_secret": "s\"x"])
    }

    @Test func emptyScopeIsLeftOut() throws {
        let resolved = try TokenRequestBuilder.resolve(
            definition("client_secret_basic"),
            values: ["client_id": Secret("id"), "client_secret": Secret("s"), "scope": Secret("")]
        ).get()
        #expect(String(decoding: resolved.request.body, as: UTF8.self) == "grant_type=client_credentials")
    }

    @Test(arguments: [
        ("http://idp.example.com/token", false),
        ("http://127.0.0.1:8080/token", true),
        ("http://localhost/token", true),
        ("http://[::1]:8080/token", true),
        ("https://idp.example.com/token", true),
        ("ftp://idp.example.com/token", false),
        ("not a url", false),
    ])
    func tokenURLRules(_ url: String, _ allowed: Bool) throws {
        let result = TokenRequestBuilder.resolve(
            try definition("client_secret_basic", url: url),
            values: ["client_id": Secret("id"), "client_secret": Secret("s")]
        )
        switch result {
        case .success: #expect(allowed)
        case .failure(let diagnostic):
            #expect(!allowed)
            #expect(diagnostic.key == "token_url")
        }
    }

    @Test func insecureHTTPCanBeAllowedExplicitly() throws {
        let result = TokenRequestBuilder.resolve(
            try definition("client_secret_basic", url: "http://idp.internal/token", extra: "allow_insecure_http = true"),
            values: ["client_id": Secret("id"), "client_secret": Secret("s")]
        )
        #expect((try? result.get()) != nil)
    }

    @Test func fingerprintChangesWithTheSecretButNeverContainsIt() throws {
        let base = try definition("client_secret_basic")
        let one = try TokenRequestBuilder.resolve(base, values: ["client_id": Secret("id"), "client_secret": Secret("one")]).get()
        let same = try TokenRequestBuilder.resolve(base, values: ["client_id": Secret("id"), "client_secret": Secret("one")]).get()
        let two = try TokenRequestBuilder.resolve(base, values: ["client_id": Secret("id"), "client_secret": Secret("two")]).get()
        #expect(one.fingerprint == same.fingerprint)
        #expect(one.fingerprint != two.fingerprint)
        #expect(one.fingerprint.count == 64)
        #expect("\(one.request)" == "POST http://127.0.0.1:9101/token (headers and body redacted)")
        #expect("\(Secret("one"))" == "<redacted>")
    }

    @Test func formEncodingRoundTrips() {
        let text = "a b+c/d=e:f%g&h~i.j_k-lé"
        #expect(FormURLEncoding.decode(FormURLEncoding.encode(text)[...]) == text)
        #expect(FormURLEncoding.encode(" ") == "%20")
        #expect(FormURLEncoding.decode("a+b%2") == nil)
    }
}
