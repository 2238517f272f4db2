import Crypto
import Foundation

/// The request fingerprint that ties a cached token to the request definition that obtained it.
extension TokenRequestBuilder {
    static func fingerprint(of request: TokenRequest, _ connector: ConnectorDefinition) -> String {
        hex(fingerprintDigest(of: request, connector))
    }

    static func fingerprintDigest(of request: TokenRequest, _ connector: ConnectorDefinition) -> SHA256.Digest {
        // "tokend-fingerprint-v2\n", then "<byte count>:<field>\n" for each field, built in one buffer.
        var canonical: [UInt8] = Array("tokend-fingerprint-v2\n".utf8)
        canonical.reserveCapacity(request.url.utf8.count + request.body.count + 512)
        func add(_ field: String) {
            canonical.append(contentsOf: String(field.utf8.count).utf8)
            canonical.append(UInt8(ascii: ":"))
            canonical.append(contentsOf: field.utf8)
            canonical.append(UInt8(ascii: "\n"))
        }
        add(request.method)
        add(request.url)
        for header in request.headers {
            add(header.name)
            add(header.value)
        }
        add(String(decoding: request.body, as: UTF8.self))
        add(connector.tokenKey)
        add(connector.tokenTypeKey)
        add(connector.expiresInKey)
        add(connector.expiresAtKey ?? "-")
        add(connector.defaultTTL.map { String($0) } ?? "-")
        // Added only when present, so that the fingerprints of instances without them stay as they were.
        if let assertion = request.assertion {
            for field in [
                "assertion", assertion.algorithm.rawValue, assertion.clientID, assertion.audience, assertion.keyID ?? "-",
                sha256Hex(assertion.keyMaterial.revealed),
            ] + assertionFingerprintFields(assertion) { add(field) }
        }
        if !request.tls.isDefault {
            for field in [
                "tls", sha256Hex(request.tls.trustRootsPEM ?? "-"), sha256Hex(request.tls.clientCertificatePEM ?? "-"),
                sha256Hex(request.tls.clientKeyPEM?.revealed ?? "-"),
            ] { add(field) }
        }
        return SHA256.hash(data: canonical)
    }

    static func sha256Hex(_ text: String) -> String {
        hex(SHA256.hash(data: Array(text.utf8)))
    }

    static func hex(_ digest: SHA256.Digest) -> String {
        // Digits from a table: String(format:) is slow enough to show in a config load
        // (BENCHMARKS.md, "Figures behind code comments").
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(SHA256.Digest.byteCount * 2)
        for byte in digest {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
