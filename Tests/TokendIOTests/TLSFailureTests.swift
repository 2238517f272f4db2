import Foundation
import NIOSSL
import Testing
import TokendCore
import TokendTestSupport

@testable import TokendIO

/// How the AsyncHTTPClient adapter reports TLS failures that the fault matrix throws at the daemon, one request at a
/// time, so that a racing timer cannot hide a wrong classification.
@Suite(.serialized, .timeLimit(.minutes(1))) struct TLSFailureTests {
    /// A server that accepts the connection and never answers the ClientHello: every attempt, made back to back as
    /// instances at one provider would, is the same `timeout` that names the set-up, within about connect_timeout.
    ///
    /// AsyncHTTPClient reports the first as a connect timeout and the next ones as a TLS handshake timeout (a request
    /// queued behind the stalled connection fails with it; one that times out waiting inherits the last connection's
    /// error); tokend used to make those `network` failures.
    @Test func aStalledHandshakeIsTheSameTimeoutEveryTime() async throws {
        let server = LocalTokenServer()
        server.stallHandshakes(true)
        try await server.start(port: 0)
        let endpoint = HTTPTokenEndpoint(connectTimeout: 0.3, requestTimeout: 5)
        var failures: [FetchFailure] = []
        for _ in 0..<3 {
            let started = Date()
            let result = await endpoint.send(TokenRequest(url: "https://127.0.0.1:\(server.port)/token", headers: [], body: []))
            #expect(Date().timeIntervalSince(started) < 2, "gave up only after \(Date().timeIntervalSince(started)) s")
            guard case .failure(let failure) = result else {
                Issue.record("a stalled handshake succeeded")
                continue
            }
            failures.append(failure)
        }
        await endpoint.shutdown()
        await server.stop()
        // No retries of its own: one connection per attempt at most (a request queued behind a stalled one has none).
        #expect((1...3).contains(server.connectionTimes.count), "\(server.connectionTimes.count) connections")
        #expect(server.requestCount == 0)
        for failure in failures {
            #expect(failure.kind == .transient && failure.code == "timeout", "\(failure)")
            #expect(
                failure.message
                    == "no connection to 127.0.0.1:\(server.port) within connect_timeout (TCP connect or TLS handshake unanswered)",
                "\(failure)"
            )
        }
    }

    /// A certificate for another name: NIOSSL's own text would say "Couldn't find <none>" for an IP address.
    @Test func aCertificateForAnotherNameNamesTheHost() {
        for (host, name) in [("127.0.0.1:8443", "127.0.0.1"), ("[::1]:8443", "[::1]"), ("idp.example", "idp.example")] {
            let failure = HTTPTokenEndpoint.classify(NIOSSLExtraError.failedToValidateHostname, host: host, https: true)
            #expect(failure.kind == .transient && failure.code == "tls")
            #expect(failure.message == "TLS handshake with \(host) failed: its certificate is not for \(name) (failedToValidateHostname)")
        }
    }

    /// Plain HTTP where the URL says https://: a `tls` failure that says the answer was not TLS.
    @Test func plainHTTPBehindAnHTTPSURLIsNamed() async throws {
        let server = LocalTokenServer()
        try await server.start(port: 0)
        let endpoint = HTTPTokenEndpoint(connectTimeout: 2, requestTimeout: 5)
        let result = await endpoint.send(TokenRequest(url: "https://127.0.0.1:\(server.port)/token", headers: [], body: []))
        await endpoint.shutdown()
        await server.stop()
        guard case .failure(let failure) = result else {
            Issue.record("expected a failure")
            return
        }
        #expect(failure.kind == .transient && failure.code == "tls")
        #expect(
            failure.message == "TLS handshake with 127.0.0.1:\(server.port) failed: the answer is not TLS "
                + "(WRONG_VERSION_NUMBER; a plain-HTTP server behind an https:// URL?)",
            "\(failure)"
        )
        #expect(server.requestCount == 0)
    }
}
