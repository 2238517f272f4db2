import Foundation
import NIOSSL
import Testing
import TokendCore
import TokendTestSupport

/// Issue #9's fault matrix: one daemon, one instance per fault, each instance with its own token endpoint that issues a
/// 6 s token and then misbehaves.
///
/// While clients read every instance five times a second the test shows, for every fault: the daemon stays up, the
/// still-valid token keeps being served, no token is ever served past its true expiry, the instance's status names the
/// problem, the endpoint is asked no more often than the backoff allows (the requests are counted), and a new token
/// comes once the endpoint behaves again.
///
/// The TLS cases serve HTTPS under a test CA that the instance trusts through `ca_file`; after the first token the
/// endpoint's new connections go wrong (another CA's certificate, a certificate for another name, a handshake that
/// never gets an answer, plain HTTP, TLS 1.1 only). Those attempts never reach the endpoint's HTTP layer, so for them the connections are counted.
@Suite(.serialized, .timeLimit(.minutes(3))) struct FaultMatrixEndToEndTests {
    struct FaultCase: Sendable, CustomStringConvertible {
        enum Outcome: Sendable {
            /// The answer is refused with this code and kind; consecutive attempts are at least `minGap` s apart.
            case rejected(code: String, kind: String, minGap: Double)
            /// The answer is a token (with an odd lifetime) that is served, but never past its true expiry.
            case accepted
        }

        enum Fault: Sendable {
            /// Every request after the first token is answered this way.
            case answer(LocalTokenServer.Behavior)
            /// The endpoint stops listening (connection refused).
            case refused
            /// The endpoint speaks HTTPS; the connections it accepts after the first token go wrong this way.
            case tls(TLSFault)
        }

        enum TLSFault: Sendable {
            /// A certificate for the right host from a CA the instance does not trust.
            case untrustedCertificate
            /// A certificate from the trusted CA for another host name.
            case wrongHost
            /// The connection is accepted and the ClientHello never answered.
            case handshakeStall
            /// Plain HTTP on the port the https:// URL names.
            case plainHTTP
            /// The server offers TLS 1.1 at most (tokend asks for 1.2 at least).
            case onlyTLS11
        }

        var name: String
        var fault: Fault
        var outcome: Outcome
        /// Text the instance's last error message must contain while the fault lasts.
        var says: String?

        var description: String { name }

        var isTLS: Bool {
            if case .tls = fault { return true }
            return false
        }

        var isAccepted: Bool {
            if case .accepted = outcome { return true }
            return false
        }
    }

    static let lifetime = 6
    /// Backoff floors with the settings below: retry_initial; timeout + retry_initial (less the connection set-up,
    /// which the endpoint does not see); connect_timeout + retry_initial (counted between accepted connections, less
    /// what the set-up of each took); permanent_retry.
    static let transient = 0.45
    static let afterTimeout = 1.2
    static let afterConnectTimeout = 1.1
    static let permanent = 2.95

    /// `fault` nil: the endpoint stops listening.
    static func rejected(
        _ name: String,
        _ fault: LocalTokenServer.Behavior?,
        _ code: String,
        permanent: Bool = false,
        minGap: Double? = nil
    ) -> FaultCase {
        FaultCase(
            name: name,
            fault: fault.map { .answer($0) } ?? .refused,
            outcome: .rejected(
                code: code,
                kind: permanent ? "permanent" : "transient",
                minGap: minGap ?? (permanent ? Self.permanent : Self.transient)
            )
        )
    }

    /// A TLS fault: always transient (the certificate or the server may be fixed at any moment).
    static func rejected(
        _ name: String,
        tls fault: FaultCase.TLSFault,
        _ code: String,
        says: String,
        minGap: Double = transient
    ) -> FaultCase {
        FaultCase(name: name, fault: .tls(fault), outcome: .rejected(code: code, kind: "transient", minGap: minGap), says: says)
    }

    static func accepted(_ name: String, _ fault: LocalTokenServer.Behavior) -> FaultCase {
        FaultCase(name: name, fault: .answer(fault), outcome: .accepted)
    }

    static func oauthError(_ code: String, status: Int = 400) -> LocalTokenServer.Behavior {
        .respond(status: status, headers: [], body: #"{"error":"\#(code)","error_description":"said the provider"}"#)
    }

    static let cases: [FaultCase] = [
        rejected(
            "http-500",
            .respond(
                status: 500,
                headers: [.init("Content-Type", "text/html")],
                body: "<html><body><h1>500 Internal Server Error</h1></body></html>"
            ),
            "http_500"
        ),
        rejected("http-502", .respond(status: 502, headers: [], body: "Bad Gateway"), "http_502"),
        rejected("http-503", .respond(status: 503, headers: [], body: ""), "http_503"),
        rejected("http-429-seconds", .respond(status: 429, headers: [.init("Retry-After", "2")], body: ""), "http_429", minGap: 1.95),
        rejected("http-429-date", .tooManyRequests(retryAfterDateIn: 3), "slow_down", minGap: 1.9),
        rejected("redirect", .respond(status: 302, headers: [.init("Location", "http://127.0.0.1:1/elsewhere")], body: ""), "redirect"),
        rejected("hang", .hang, "timeout", minGap: afterTimeout),
        rejected("drop-mid-body", .dropMidBody(body: #"{"access_token":"never-whole","token_type":"Bearer","expires_in":6}"#), "network"),
        rejected(
            "partial-body",
            .partialBody(body: #"{"access_token":"never-whole","#, declaredLength: 4096),
            "timeout",
            minGap: afterTimeout
        ),
        rejected("refused", nil, "network"),
        rejected(
            "html-200",
            .respond(status: 200, headers: [.init("Content-Type", "text/html")], body: "<html><body>Please log in</body></html>"),
            "invalid_response"
        ),
        rejected("empty-200", .respond(status: 200, headers: [], body: ""), "invalid_response"),
        rejected("malformed-json", .respond(status: 200, headers: [], body: #"{"access_token":"half","expires_in":6"#), "invalid_response"),
        rejected("json-array", .respond(status: 200, headers: [], body: #"["access_token","x"]"#), "invalid_response"),
        rejected("no-token-key", .respond(status: 200, headers: [], body: #"{"token_type":"Bearer","expires_in":6}"#), "invalid_response"),
        rejected(
            "token-not-string",
            .respond(status: 200, headers: [], body: #"{"access_token":12345,"expires_in":6}"#),
            "invalid_response"
        ),
        rejected(
            "huge-body",
            .respond(status: 200, headers: [], body: String(repeating: " ", count: (1 << 20) + 10) + "{}"),
            "invalid_response"
        ),
        rejected("expires-in-missing", .issueToken(expiresIn: nil), "no_lifetime", permanent: true),
        rejected("expires-in-zero", .issueToken(expiresIn: "0"), "invalid_response"),
        rejected("expires-in-negative", .issueToken(expiresIn: "-30"), "invalid_response"),
        rejected("expires-in-string", .issueToken(expiresIn: #""soon""#), "invalid_response"),
        rejected("jwt-already-expired", .issueToken(expiresIn: "60", jwtExpiresIn: -10), "invalid_response"),
        accepted("expires-in-huge", .issueToken(expiresIn: "1e300")),
        accepted("expires-in-numeric-string", .issueToken(expiresIn: #""6""#)),
        accepted("jwt-exp-before-expires-in", .issueToken(expiresIn: "60", jwtExpiresIn: 3)),
        accepted("jwt-exp-after-expires-in", .issueToken(expiresIn: "6", jwtExpiresIn: 3600)),
        rejected("invalid-request", oauthError("invalid_request"), "invalid_request", permanent: true),
        rejected("invalid-client", oauthError("invalid_client", status: 401), "invalid_client", permanent: true),
        rejected("invalid-grant", oauthError("invalid_grant"), "invalid_grant", permanent: true),
        rejected("unauthorized-client", oauthError("unauthorized_client"), "unauthorized_client", permanent: true),
        rejected("unsupported-grant-type", oauthError("unsupported_grant_type"), "unsupported_grant_type", permanent: true),
        rejected("invalid-scope", oauthError("invalid_scope"), "invalid_scope", permanent: true),
        rejected("http-401-bare", .respond(status: 401, headers: [], body: ""), "http_401", permanent: true),
        rejected("http-403-html", .respond(status: 403, headers: [], body: "<html>Forbidden</html>"), "http_403", permanent: true),
        rejected("server-error-code", oauthError("server_error", status: 500), "server_error"),
        rejected("temporarily-unavailable", oauthError("temporarily_unavailable", status: 503), "temporarily_unavailable"),
        rejected(
            "tls-untrusted-certificate",
            tls: .untrustedCertificate,
            "tls",
            says: "its certificate is not trusted (CERTIFICATE_VERIFY_FAILED; checked against ca_file /tmp/tokend-pki-"
        ),
        rejected("tls-wrong-host", tls: .wrongHost, "tls", says: "its certificate is not for 127.0.0.1 (failedToValidateHostname)"),
        rejected(
            "tls-handshake-stall",
            tls: .handshakeStall,
            "timeout",
            says: "within connect_timeout (TCP connect or TLS handshake unanswered)",
            minGap: afterConnectTimeout
        ),
        rejected("tls-plain-http", tls: .plainHTTP, "tls", says: "the answer is not TLS (WRONG_VERSION_NUMBER"),
        rejected("tls-1.1-only", tls: .onlyTLS11, "tls", says: "no TLS version in common"),
    ]

    static let settings = """
        startup_timeout = "15s"
        [refresh]
        ratio = 0.5
        min_lead = "0s"
        jitter = 0.1
        min_interval = "1s"
        retry_initial = "500ms"
        retry_max = "2s"
        permanent_retry = "3s"
        [http]
        connect_timeout = "750ms"
        timeout = "1s"
        """

    struct Sample: Sendable {
        var instance: String
        var sentAt: Date
        var status: Int
        var body: String
    }

    struct Snapshot: Sendable {
        var at: Date
        var statuses: [String: API.InstanceStatus]
    }

    /// One round: every instance's raw token, and the status list.
    ///
    /// A request the daemon did not answer (a refused or dropped connection, a timeout) is a failure of the round,
    /// never left out.
    static func sampleRound(_ harness: DaemonHarness) async -> (samples: [Sample], snapshot: Snapshot?, failures: [String]) {
        await withTaskGroup(of: (Sample?, Snapshot?, String?).self) { group in
            for fault in cases {
                group.addTask {
                    let sentAt = Date()
                    do {
                        let answer = try await harness.get("/v1/tokens/\(fault.name)?format=raw")
                        return (Sample(instance: fault.name, sentAt: sentAt, status: answer.status, body: answer.body), nil, nil)
                    } catch {
                        return (nil, nil, "GET /v1/tokens/\(fault.name): \(error)")
                    }
                }
            }
            group.addTask {
                let at = Date()
                do {
                    let body = try await harness.get("/v1/instances").json(API.InstancesBody.self)
                    return (nil, Snapshot(at: at, statuses: Dictionary(uniqueKeysWithValues: body.instances.map { ($0.name, $0) })), nil)
                } catch {
                    return (nil, nil, "GET /v1/instances: \(error)")
                }
            }
            var samples: [Sample] = []
            var snapshot: Snapshot?
            var failures: [String] = []
            for await (sample, taken, failure) in group {
                if let sample { samples.append(sample) }
                if let taken { snapshot = taken }
                if let failure { failures.append(failure) }
            }
            return (samples, snapshot, failures)
        }
    }

    /// HTTPS with the certificate the instances' `ca_file` trusts, TLS 1.2 or later, answering handshakes.
    static func serveTrusted(_ server: LocalTokenServer, _ pki: TestPKI) throws {
        try server.useTLS(certificatePath: pki.serverCertificate, keyPath: pki.serverKey)
        server.stallHandshakes(false)
    }

    /// Makes the endpoint's new connections go wrong, and closes the kept-alive one so that the daemon's next request
    /// must shake hands again.
    static func inject(_ fault: FaultCase.TLSFault, into server: LocalTokenServer, _ pki: TestPKI) async throws {
        switch fault {
        case .untrustedCertificate: try server.useTLS(certificatePath: pki.otherServerCertificate, keyPath: pki.otherServerKey)
        case .wrongHost: try server.useTLS(certificatePath: pki.wrongHostCertificate, keyPath: pki.wrongHostKey)
        case .handshakeStall: server.stallHandshakes(true)
        case .plainHTTP: server.usePlainHTTP()
        case .onlyTLS11: try server.useTLS(certificatePath: pki.serverCertificate, keyPath: pki.serverKey, maximumVersion: .tlsv11)
        }
        await server.closeConnections()
    }

    @Test func everyFaultKeepsTheDaemonUpServesOnlyLiveTokensAndRecovers() async throws {
        try await DaemonHarness.with(settings: Self.settings) { harness in
            try await Self.runMatrix(harness)
        }
    }

    static func runMatrix(_ harness: DaemonHarness) async throws {
        let pki = try TestPKI.make()
        harness.onTearDown { pki.remove() }
        var servers: [String: LocalTokenServer] = [:]
        for fault in Self.cases {
            let server = LocalTokenServer(lifetime: Self.lifetime)
            harness.adopt(server)
            if fault.isTLS { try Self.serveTrusted(server, pki) }
            try await server.start(port: 0)
            server.script([.issue(lifetime: Self.lifetime)])
            if case .answer(let behavior) = fault.fault { server.setBehavior(behavior) }
            servers[fault.name] = server
            try harness.writeInstance(fault.name, tokenURL: server.tokenURL, caFile: fault.isTLS ? pki.caCertificate : nil)
        }
        try harness.start()
        try await harness.waitUntilReady()
        var first: [String: (token: String, at: Date)] = [:]
        /// When a TLS fault began: the connections accepted from then on are its attempts.
        var tlsFaultSince: [String: Date] = [:]
        for fault in Self.cases {
            let server = try #require(servers[fault.name])
            first[fault.name] = (try #require(server.issuedTokens.first, "\(fault)"), try #require(server.requests.first?.receivedAt))
            switch fault.fault {
            case .answer: break
            case .refused: await server.stop()
            case .tls(let tlsFault):
                tlsFaultSince[fault.name] = Date()
                try await Self.inject(tlsFault, into: server, pki)
            }
        }
        let startedAt = try #require(first.values.map(\.at).min())

        // Phase 1: the endpoints misbehave from the first refresh (≈ 3 s) past the first token's expiry (6 s).
        var samples: [Sample] = []
        var snapshots: [Snapshot] = []
        var failedRequests: [String] = []
        while Date() < startedAt.addingTimeInterval(7.2) {
            let round = await Self.sampleRound(harness)
            samples += round.samples
            failedRequests += round.failures
            if let snapshot = round.snapshot { snapshots.append(snapshot) }
            try await Task.sleep(for: .milliseconds(150))
        }
        #expect(harness.process?.isRunning == true, "log: \(harness.log.suffix(3000))")

        // Phase 2: every endpoint behaves again.
        let behavedAt = Date()
        /// When the endpoint saw the fault's attempts: the requests after the first token, or, for a TLS fault (which
        /// never reaches HTTP), the connections since it began; none for a refused connection.
        var faultRequests: [String: [Date]] = [:]
        for fault in Self.cases {
            let server = try #require(servers[fault.name])
            switch fault.fault {
            case .answer: faultRequests[fault.name] = server.requests.dropFirst().map(\.receivedAt)
            case .refused: try await server.start()
            case .tls:
                let since = try #require(tlsFaultSince[fault.name])
                faultRequests[fault.name] = server.connectionTimes.filter { $0 >= since }
                try Self.serveTrusted(server, pki)
            }
            server.setBehavior(.issue(lifetime: Self.lifetime))
        }
        /// A token served after the endpoint behaved: a new one, unless the fault was a token it accepted.
        func recovered(_ fault: FaultCase) -> Bool {
            samples.contains { sample in
                sample.instance == fault.name && sample.status == 200 && sample.sentAt > behavedAt
                    && (fault.isAccepted || sample.body != first[fault.name]!.token)
            }
        }
        while Date() < behavedAt.addingTimeInterval(12), !Self.cases.allSatisfy(recovered) {
            let round = await Self.sampleRound(harness)
            samples += round.samples
            failedRequests += round.failures
            if let snapshot = round.snapshot { snapshots.append(snapshot) }
            try await Task.sleep(for: .milliseconds(150))
        }
        // Every request the readers sent was answered: a daemon that drops connections under the faults fails here.
        #expect(failedRequests.isEmpty, "\(failedRequests.count) requests failed, first: \(failedRequests.prefix(3))")
        let final = try await harness.get("/v1/instances").json(API.InstancesBody.self)
        #expect(harness.process?.isRunning == true, "log: \(harness.log.suffix(3000))")

        for fault in Self.cases {
            let server = try #require(servers[fault.name])
            let mine = samples.filter { $0.instance == fault.name }
            let (firstToken, issuedAt) = first[fault.name]!
            // Never a token past its true expiry, never a token the endpoint did not issue whole.
            for sample in mine where sample.status == 200 {
                let expiry = server.trueExpiry(of: sample.body)
                #expect(expiry != nil, "\(fault): served a token the endpoint never issued")
                if let expiry {
                    #expect(sample.sentAt < expiry, "\(fault): served \(sample.sentAt.timeIntervalSince(expiry)) s after its expiry")
                }
            }
            #expect(recovered(fault), "\(fault): no new token after the endpoint behaved; log: \(harness.log.suffix(2000))")
            #expect(
                final.instances.first { $0.name == fault.name }?.state == "valid",
                "\(fault): \(String(describing: final.instances.first { $0.name == fault.name }))"
            )
            let during = mine.filter { $0.sentAt < behavedAt }
            let code: String
            let kind: String
            let minGap: Double
            switch fault.outcome {
            case .accepted:
                // The odd token was taken and served (the expiry check above held it to its true expiry).
                #expect(
                    during.contains { $0.status == 200 && $0.body != firstToken && server.issuedTokens.contains($0.body) },
                    "\(fault): the accepted token was never served"
                )
                continue
            case .rejected(let rejectedCode, let rejectedKind, let rejectedGap):
                (code, kind, minGap) = (rejectedCode, rejectedKind, rejectedGap)
            }
            // The still-valid token was served while the endpoint failed …
            let failingSince = faultRequests[fault.name]?.first ?? issuedAt.addingTimeInterval(3.5)
            #expect(
                during.contains { $0.status == 200 && $0.body == firstToken && $0.sentAt > failingSince },
                "\(fault): the valid token was not served during the fault"
            )
            // … the status named the problem while it did, and after expiry …
            let mineSnapshots = snapshots.compactMap { $0.statuses[fault.name] }
            #expect(
                mineSnapshots.contains { $0.state == "degraded" && $0.last_error?.code == code && $0.last_error?.kind == kind },
                "\(fault): \(mineSnapshots.map { "\($0.state)/\($0.last_error?.code ?? "-")" })"
            )
            if let says = fault.says {
                let messages = Set(mineSnapshots.compactMap { $0.last_error?.message })
                #expect(!messages.isEmpty && messages.allSatisfy { $0.contains(says) }, "\(fault): \(messages)")
            }
            #expect(mineSnapshots.contains { $0.state == "failing" && $0.last_error?.code == code }, "\(fault): never failing with \(code)")
            // … and readers got a 503 naming it once the token was gone.
            let refusals = during.filter { $0.status == 503 }
            #expect(!refusals.isEmpty, "\(fault): no 503 after the token expired")
            #expect(refusals.allSatisfy { $0.sentAt > issuedAt.addingTimeInterval(5.3) }, "\(fault): refused while the token was valid")
            let lastErrors = refusals.map { try? JSONDecoder().decode(API.ErrorBody.self, from: Data($0.body.utf8)) }
            #expect(
                lastErrors.contains { $0?.last_error == code },
                "\(fault): 503s named \(Set(lastErrors.map { $0?.last_error ?? "nothing" }))"
            )
            // The endpoint was not hammered: attempts are at least the backoff apart (refused connections are not
            // seen by the endpoint; TLS attempts are its accepted connections). Every fault is retried within the
            // 4 s it lasts at least once (the slowest, permanent_retry, is 3 s), so there is a gap to measure.
            if case .refused = fault.fault { continue }
            let times = try #require(faultRequests[fault.name], "\(fault): no attempts recorded")
            #expect(times.count >= 2, "\(fault): \(times.count) attempt(s) during the fault; no gap to check")
            for (earlier, later) in zip(times, times.dropFirst()) {
                #expect(later.timeIntervalSince(earlier) >= minGap, "\(fault): attempts \(later.timeIntervalSince(earlier)) s apart")
            }
        }
        #expect(try await harness.stop() == 0)
    }
}
