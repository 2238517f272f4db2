import Crypto
import Foundation
import Testing
import TokendTestSupport

@testable import TokendCore

/// The request fingerprint and the form body, now built in byte buffers, are byte for byte what the string-built
/// versions gave: a changed fingerprint would throw away every cached token on upgrade.
@Suite struct FingerprintTests {
    /// The fingerprint as sessions 1-3 computed it (string concatenation), assertion and TLS fields included.
    static func referenceFingerprint(of request: TokenRequest, _ connector: ConnectorDefinition) -> String {
        var canonical = "tokend-fingerprint-v2\n"
        var fields: [String] = [request.method, request.url]
        for header in request.headers { fields += [header.name, header.value] }
        fields.append(String(decoding: request.body, as: UTF8.self))
        fields += [
            connector.tokenKey, connector.tokenTypeKey, connector.expiresInKey, connector.expiresAtKey ?? "-",
            connector.defaultTTL.map { String($0) } ?? "-",
        ]
        if let assertion = request.assertion {
            fields += [
                "assertion", assertion.algorithm.rawValue, assertion.clientID, assertion.audience, assertion.keyID ?? "-",
                TokenRequestBuilder.sha256Hex(assertion.keyMaterial.revealed),
            ]
        }
        if !request.tls.isDefault {
            fields += [
                "tls", TokenRequestBuilder.sha256Hex(request.tls.trustRootsPEM ?? "-"),
                TokenRequestBuilder.sha256Hex(request.tls.clientCertificatePEM ?? "-"),
                TokenRequestBuilder.sha256Hex(request.tls.clientKeyPEM?.revealed ?? "-"),
            ]
        }
        for field in fields { canonical += "\(field.utf8.count):\(field)\n" }
        return SHA256.hash(data: Data(canonical.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    static func text(_ generator: inout SeededGenerator, _ length: ClosedRange<Int>) -> String {
        let alphabet = Array("abcXYZ019 -._~%&=+/?:@\"\\\n€é😀")
        return String((0..<Int.random(in: length, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! })
    }

    @Test func theFingerprintIsUnchangedOverSeededRequests() {
        var generator = SeededGenerator(seed: 91)
        for _ in 0..<1_000 {
            var connector = ConnectorDefinition(name: "c", file: "c.toml", isInline: true, tokenURL: "", variables: [:])
            if Bool.random(using: &generator) { connector.expiresAtKey = Self.text(&generator, 1...10) }
            if Bool.random(using: &generator) { connector.defaultTTL = Double.random(in: 1...100_000, using: &generator) }
            let headers = (0..<Int.random(in: 0...4, using: &generator)).map { _ in
                TokenRequest.Header(Self.text(&generator, 1...12), Self.text(&generator, 0...60))
            }
            var request = TokenRequest(
                url: "https://" + Self.text(&generator, 1...80),
                headers: headers,
                body: Array(Self.text(&generator, 0...300).utf8)
            )
            if Int.random(in: 0..<3, using: &generator) == 0 {
                request.assertion = ClientAssertion(
                    clientID: Self.text(&generator, 1...20),
                    audience: Self.text(&generator, 1...40),
                    keyID: Bool.random(using: &generator) ? nil : Self.text(&generator, 1...10),
                    keyMaterial: Secret(Self.text(&generator, 1...80)),
                    algorithm: AssertionAlgorithm.allCases.randomElement(using: &generator)!
                )
            }
            if Int.random(in: 0..<4, using: &generator) == 0 {
                request.tls = TLSMaterial(trustRootsPEM: Self.text(&generator, 1...50), clientKeyPEM: Secret(Self.text(&generator, 1...50)))
            }
            #expect(TokenRequestBuilder.fingerprint(of: request, connector) == Self.referenceFingerprint(of: request, connector))
        }
    }

    @Test func theFormBodyIsUnchanged() {
        var generator = SeededGenerator(seed: 92)
        for _ in 0..<1_000 {
            let fields = (0..<Int.random(in: 0...6, using: &generator)).map { _ in
                (name: Self.text(&generator, 1...10), value: Self.text(&generator, 0...40))
            }
            let reference = fields.map { "\(FormURLEncoding.encode($0.name))=\(FormURLEncoding.encode($0.value))" }
                .joined(separator: "&")
            #expect(FormURLEncoding.encodedBytes(fields: fields) == Array(reference.utf8))
            #expect(FormURLEncoding.encode(fields: fields) == reference)
        }
    }
}
