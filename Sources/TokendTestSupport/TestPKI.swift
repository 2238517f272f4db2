import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PKI made with the openssl CLI in a temporary directory: a CA, a server certificate for 127.0.0.1 and
/// localhost, one for another name, a client certificate (for RFC 8705, and in DER), and RSA, EC P-256 and Ed25519
/// signing keys with their public keys; and another CA with a server certificate of its own.
public struct TestPKI: Sendable {
    public let directory: String

    public var caCertificate: String { directory + "/ca.pem" }
    public var serverCertificate: String { directory + "/server.pem" }
    public var serverKey: String { directory + "/server.key" }
    public var clientCertificate: String { directory + "/client.pem" }
    public var clientKey: String { directory + "/client.key" }
    /// A certificate from another CA, to show that a wrong ca_file is refused.
    public var otherCACertificate: String { directory + "/other-ca.pem" }
    /// A server certificate for 127.0.0.1 that the other CA issued: valid in every way but not trusted by a
    /// `ca_file` of ``caCertificate``.
    public var otherServerCertificate: String { directory + "/other-server.pem" }
    public var otherServerKey: String { directory + "/other-server.key" }
    /// A server certificate from the CA for another name (`elsewhere.example`), not for 127.0.0.1.
    public var wrongHostCertificate: String { directory + "/wrong-host.pem" }
    public var wrongHostKey: String { directory + "/wrong-host.key" }
    public var rsaKey: String { directory + "/rsa.key" }
    public var rsaPublicKey: String { directory + "/rsa.pub" }
    public var ecKey: String { directory + "/ec.key" }
    public var ecPublicKey: String { directory + "/ec.pub" }
    public var edKey: String { directory + "/ed.key" }
    public var edPublicKey: String { directory + "/ed.pub" }
    /// ``clientCertificate`` in DER, converted by openssl (for certificate thumbprints).
    public var clientCertificateDER: String { directory + "/client.der" }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Generates everything in a new directory under /tmp (removed by ``remove()``).
    public static func make() throws -> TestPKI {
        var template = Array("/tmp/tokend-pki-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Failure(description: "mkdtemp failed") }
        let pki = TestPKI(directory: String(cString: made))
        do {
            try pki.generate()
        } catch {
            pki.remove()
            throw error
        }
        return pki
    }

    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    public func read(_ path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8)
    }

    private func generate() throws {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        for (name, subject) in [("ca", "/CN=tokend test CA"), ("other-ca", "/CN=another test CA")] {
            try openssl(
                ["req", "-x509"] + ec + [
                    "-keyout", "\(name).key", "-out", "\(name).pem", "-days", "2", "-subj", subject,
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                ]
            )
        }
        let serverExtensions = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        try issue("server", subject: "/CN=127.0.0.1", extensions: serverExtensions)
        try issue("other-server", subject: "/CN=127.0.0.1", extensions: serverExtensions, by: "other-ca")
        try issue(
            "wrong-host",
            subject: "/CN=elsewhere.example",
            extensions: "subjectAltName=DNS:elsewhere.example\nextendedKeyUsage=serverAuth\n"
        )
        try issue("client", subject: "/CN=tokend-client", extensions: "extendedKeyUsage=clientAuth\n")
        try openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.key"])
        try openssl(["pkey", "-in", "rsa.key", "-pubout", "-out", "rsa.pub"])
        try openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.key"])
        try openssl(["pkey", "-in", "ec.key", "-pubout", "-out", "ec.pub"])
        try openssl(["genpkey", "-algorithm", "ED25519", "-out", "ed.key"])
        try openssl(["pkey", "-in", "ed.key", "-pubout", "-out", "ed.pub"])
        try openssl(["x509", "-in", "client.pem", "-outform", "DER", "-out", "client.der"])
    }

    private func issue(_ name: String, subject: String, extensions: String, by ca: String = "ca") throws {
        try extensions.write(toFile: "\(directory)/\(name).ext", atomically: true, encoding: .utf8)
        try openssl([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(name).key", "-out", "\(name).csr",
            "-subj", subject,
        ])
        try openssl([
            "x509", "-req", "-in", "\(name).csr", "-CA", "\(ca).pem", "-CAkey", "\(ca).key", "-CAcreateserial", "-days", "2",
            "-out", "\(name).pem", "-extfile", "\(name).ext",
        ])
    }

    private func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        // Never the test's stdin: an openssl that asks for input must fail, not wait.
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let output = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "openssl \(arguments.joined(separator: " ")) failed: \(String(decoding: output, as: UTF8.self))")
        }
    }
}
