import Foundation
import Testing

@testable import TokendCore

/// The fleet's pure parts (SPEC §14): its `[fleet]` settings, the codec that names and seals rows, and the decisions.
@Suite struct FleetTests {
    static let keyText = Data((0..<32).map { UInt8($0) }).base64EncodedString()
    static let otherKeyText = Data((0..<32).map { UInt8(255 - $0) }).base64EncodedString()

    static func codec(_ text: String = keyText) throws -> FleetCodec { try FleetCodec.parse(key: text).get() }

    static func settings(_ fleet: String) -> (DaemonSettings?, [ConfigDiagnostic]) {
        let parsed = ConfigParser.parseSettings(file: "/etc/tokend/tokend.toml", text: "[fleet]\n" + fleet)
        return (parsed.settings, parsed.diagnostics)
    }

    // MARK: - Settings

    @Test func aFullFleetTableParses() throws {
        let (settings, errors) = Self.settings(
            """
            database = "postgresql://tokend@db.example.com:6432/tokens?sslmode=verify-full"
            password = { credential = "fleet-db-password" }
            key      = { file = "/etc/tokend/fleet.key" }
            ca_file  = "/etc/tokend/db-ca.pem"
            host_id  = "web-1"
            lease    = "15s"
            """
        )
        #expect(errors.isEmpty, "\(errors)")
        let fleet = try #require(settings?.fleet)
        #expect(
            fleet.database
                == FleetDatabase(address: .tcp(host: "db.example.com", port: 6432), user: "tokend", name: "tokens", tls: .verifyFull)
        )
        #expect(fleet.password == .credential(name: "fleet-db-password"))
        #expect(fleet.key == .file(path: "/etc/tokend/fleet.key"))
        #expect(fleet.caFile == "/etc/tokend/db-ca.pem")
        #expect(fleet.hostID == "web-1")
        #expect(fleet.lease == 15)
    }

    @Test func aSocketDirectoryURLNeedsNoTLSAndTheDefaultsHold() throws {
        let (settings, errors) = Self.settings(
            """
            database = "postgresql://tokend@/tokend?host=/run/postgresql"
            key      = { credential = "fleet-key" }
            """
        )
        #expect(errors.isEmpty, "\(errors)")
        let fleet = try #require(settings?.fleet)
        #expect(fleet.database.address == .unixSocket(path: "/run/postgresql/.s.PGSQL.5432"))
        #expect(fleet.database.tls == .disable)
        #expect(fleet.lease == 20)
        #expect(fleet.hostID == nil)
        #expect(ConfigParser.parseSettings(file: "t", text: "").settings?.fleet == nil)
    }

    @Test(arguments: [
        ("database = \"postgresql://tokend:hunter2@db/tokend?sslmode=disable\"\nkey = { credential = \"k\" }", "holds a password"),
        ("database = \"mysql://tokend@db/tokend\"\nkey = { credential = \"k\" }", "postgresql:// URL"),
        ("database = \"postgresql://tokend@db/tokend?sslmode=prefer\"\nkey = { credential = \"k\" }", "sslmode"),
        ("database = \"postgresql://tokend@db/tokend?sslmode=disable\"\nkey = \"c2VjcmV0\"", "never written inline"),
        ("database = \"postgresql://tokend@db/tokend?sslmode=disable\"", "key"),
        ("key = { credential = \"k\" }", "database"),
        ("database = \"postgresql://tokend@db/tokend?sslmode=disable\"\nkey = { credential = \"k\" }\nlease = \"90s\"", "min_lead"),
        ("database = \"postgresql://tokend@db/tokend?sslmode=disable\"\nkey = { credential = \"k\" }\nleases = \"9s\"", "unknown key"),
    ])
    func aBadFleetTableIsRefusedSayingWhy(fleet: String, expected: String) {
        let (settings, errors) = Self.settings(fleet)
        #expect(settings == nil)
        #expect(errors.contains { "\($0.key ?? "") \($0.message)".contains(expected) && $0.file == "/etc/tokend/tokend.toml" }, "\(errors)")
        #expect(!errors.contains { $0.message.contains("hunter2") }, "a password reached a message")
    }

    @Test func anInstanceMayStayOutOfTheFleet() throws {
        let text = "shared = false\n" + ConfigParserTests.valid
        #expect(try #require(parseInstance(text).0).shared == false)
        #expect(try #require(parseInstance(ConfigParserTests.valid).0).shared == true)
    }

    // MARK: - Codec

    @Test func theKeyMustBe32BytesOfBase64() throws {
        #expect(throws: Never.self) { try FleetCodec.parse(key: "  \(Self.keyText)\n").get() }
        #expect(throws: FleetCodec.KeyError.self) { try FleetCodec.parse(key: "not base64!").get() }
        #expect(throws: FleetCodec.KeyError.self) { try FleetCodec.parse(key: Data(count: 16).base64EncodedString()).get() }
    }

    @Test func theIdentityDependsOnKeyNameAndFingerprint() throws {
        let codec = try Self.codec()
        let identity = codec.identity(instance: "alpha", fingerprint: "f1")
        #expect(identity.count == 32)
        #expect(identity == codec.identity(instance: "alpha", fingerprint: "f1"))
        #expect(identity != codec.identity(instance: "alpha", fingerprint: "f2"))
        #expect(identity != codec.identity(instance: "beta", fingerprint: "f1"))
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        #expect(codec.identity(instance: "ab", fingerprint: "c") != codec.identity(instance: "a", fingerprint: "bc"))
        #expect(identity != (try Self.codec(Self.otherKeyText)).identity(instance: "alpha", fingerprint: "f1"))
        #expect(codec.keyCheck != (try Self.codec(Self.otherKeyText)).keyCheck)
    }

    @Test func aSealedTokenOpensOnlyWithItsKeyRowAndRequest() throws {
        let codec = try Self.codec()
        let issued = token(lifetime: 3600, value: "the-access-token")
        let identity = codec.identity(instance: "alpha", fingerprint: "f1")
        let sealed = codec.seal(issued, identity: identity, fingerprint: "f1")
        #expect(codec.open(sealed, identity: identity, fingerprint: "f1") == issued)
        // Neither the token nor the instance name is in the sealed bytes.
        let text = String(decoding: sealed, as: UTF8.self)
        #expect(!text.contains("the-access-token") && !text.contains("alpha"))
        #expect(try Self.codec(Self.otherKeyText).open(sealed, identity: identity, fingerprint: "f1") == nil)
        #expect(codec.open(sealed, identity: codec.identity(instance: "beta", fingerprint: "f1"), fingerprint: "f1") == nil)
        #expect(codec.open(sealed, identity: identity, fingerprint: "f2") == nil)
        var tampered = sealed
        tampered[20] ^= 1
        #expect(codec.open(tampered, identity: identity, fingerprint: "f1") == nil)
        // A fresh nonce each time.
        #expect(codec.seal(issued, identity: identity, fingerprint: "f1") != sealed)
    }

    // MARK: - Decisions

    static let policy = RefreshPolicy(RefreshSettings())

    @Test func aFreshRowWrittenByAnotherHostIsAdoptedInsteadOfFetched() {
        let mine = token(lifetime: 3600, value: "mine")
        let theirs = token(obtained: epoch.addingTimeInterval(2650), lifetime: 3600, value: "theirs")
        let now = epoch.addingTimeInterval(2700)
        let row = FleetDecision.RowView(generation: 4, token: theirs)
        let step = FleetDecision.step(row: row, current: mine, invalidated: nil, policy: Self.policy, now: now)
        #expect(step == .adopt(theirs, generation: 4))
    }

    @Test func aRowHoldingOurOwnOrADueTokenIsLeasedAtItsGeneration() {
        let mine = token(lifetime: 3600, value: "mine")
        let now = epoch.addingTimeInterval(2700)
        let same = FleetDecision.RowView(generation: 4, token: mine)
        #expect(FleetDecision.step(row: same, current: mine, invalidated: nil, policy: Self.policy, now: now) == .lease(expecting: 4))
        let due = FleetDecision.RowView(generation: 5, token: token(obtained: epoch.addingTimeInterval(10), lifetime: 3600, value: "due"))
        #expect(FleetDecision.step(row: due, current: mine, invalidated: nil, policy: Self.policy, now: now) == .lease(expecting: 5))
        let sealedForAnotherKey = FleetDecision.RowView(generation: 6, token: nil)
        #expect(
            FleetDecision.step(row: sealedForAnotherKey, current: nil, invalidated: nil, policy: Self.policy, now: now)
                == .lease(expecting: 6)
        )
        #expect(FleetDecision.step(row: nil, current: nil, invalidated: nil, policy: Self.policy, now: now) == .lease(expecting: 0))
        let expired = FleetDecision.RowView(generation: 7, token: token(lifetime: 60, value: "old"))
        #expect(FleetDecision.step(row: expired, current: nil, invalidated: nil, policy: Self.policy, now: now) == .lease(expecting: 7))
    }

    /// An invalidation is a compare-and-swap: the lease on the generation that holds the refused token; a row
    /// already holding its replacement is adopted (the replacement is fetched once for the fleet).
    @Test func anInvalidationLeasesTheRefusedTokensGenerationOrTakesItsReplacement() {
        let refused = token(lifetime: 3600, value: "refused")
        let now = epoch.addingTimeInterval(100)
        let stillRefused = FleetDecision.RowView(generation: 8, token: refused)
        let step = FleetDecision.step(row: stillRefused, current: nil, invalidated: refused.fingerprint, policy: Self.policy, now: now)
        #expect(step == .lease(expecting: 8))
        let replacement = token(obtained: now, lifetime: 3600, value: "replacement")
        let replaced = FleetDecision.RowView(generation: 9, token: replacement)
        let taken = FleetDecision.step(row: replaced, current: nil, invalidated: refused.fingerprint, policy: Self.policy, now: now)
        #expect(taken == .adopt(replacement, generation: 9))
    }

    @Test func aRefusedLeaseWaitsForTheHolderUnlessOurTokenWouldLapse() {
        let now = epoch.addingTimeInterval(3000)
        let mine = token(lifetime: 3600, value: "mine")
        let row = FleetDecision.RowView(generation: 3, token: mine)
        #expect(
            FleetDecision.afterRefusal(row: row, expected: 3, leaseLeft: 10, current: mine, now: now)
                == .wait(until: now.addingTimeInterval(10.25))
        )
        let moved = FleetDecision.RowView(generation: 4, token: nil)
        #expect(FleetDecision.afterRefusal(row: moved, expected: 3, leaseLeft: 10, current: mine, now: now) == .decideAgain(moved))
        let late = epoch.addingTimeInterval(3590)
        #expect(FleetDecision.afterRefusal(row: row, expected: 3, leaseLeft: 10, current: mine, now: late) == .fetchAlone)
        #expect(
            FleetDecision.afterRefusal(row: row, expected: 3, leaseLeft: 10, current: nil, now: late)
                == .wait(until: late.addingTimeInterval(10.25))
        )
    }

    @Test func patienceIsHalfTheServingTimeLeft() {
        let mine = token(lifetime: 100)
        // Served until 95 s (5 s margin): at 55 s, 40 s are left, so the fleet gets 20 s.
        #expect(FleetDecision.patience(current: mine, now: epoch.addingTimeInterval(55)) == epoch.addingTimeInterval(75))
        #expect(FleetDecision.patience(current: mine, now: epoch.addingTimeInterval(96)) == nil)
        #expect(FleetDecision.patience(current: nil, now: epoch) == nil)
    }

    @Test func aNotifiedRowReplacesOnlyAnOlderGeneration() {
        let now = epoch.addingTimeInterval(100)
        let mine = token(lifetime: 3600, value: "mine")
        let theirs = token(obtained: now, lifetime: 3600, value: "theirs")
        let row = FleetDecision.RowView(generation: 5, token: theirs)
        #expect(FleetDecision.adoptsNotified(row: row, localGeneration: 4, current: mine, now: now) == theirs)
        #expect(FleetDecision.adoptsNotified(row: row, localGeneration: 5, current: mine, now: now) == nil)
        #expect(FleetDecision.adoptsNotified(row: row, localGeneration: nil, current: nil, now: now) == theirs)
        // A token this host fetched alone is kept over a row that expires no later.
        let shorter = FleetDecision.RowView(generation: 5, token: token(obtained: epoch, lifetime: 1800, value: "shorter"))
        #expect(FleetDecision.adoptsNotified(row: shorter, localGeneration: nil, current: mine, now: now) == nil)
        #expect(
            FleetDecision.adoptsNotified(row: FleetDecision.RowView(generation: 6, token: nil), localGeneration: 4, current: mine, now: now)
                == nil
        )
    }
}
