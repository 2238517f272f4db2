import Foundation
import Testing

@testable import TokendCore

/// credentials.sock's pure parts (SPEC §10): systemd's peer address, `[access] units` globs, the serve/refuse decision,
/// and the config keys.
@Suite struct CredentialRequestTests {
    static func abstract(_ name: String, padTo length: Int = 0) -> [UInt8] {
        var bytes = [0] + Array(name.utf8)
        while bytes.count < length { bytes.append(0) }
        return bytes
    }

    @Test func systemdsAddressNamesTheUnitAndTheCredential() {
        let request = CredentialRequest.parse(address: Self.abstract("c0ffee1234abcd/unit/backup.service/acme-prod"))
        #expect(request == CredentialRequest(unit: "backup.service", id: "acme-prod"))
        // NIO hands over the whole zeroed sun_path: the trailing NULs are not part of the name.
        #expect(CredentialRequest.parse(address: Self.abstract("1/unit/report@x.service/id", padTo: 108))?.unit == "report@x.service")
    }

    @Test(arguments: [
        "",  // unnamed
        "c0ffee/unit/backup.service",  // no id
        "c0ffee/unit/backup.service/id/more",  // extra part
        "c0ffee/units/backup.service/id",  // not "unit"
        "xyz!/unit/backup.service/id",  // not hex
        "/unit/backup.service/id",  // no random part
        "c0ffee/unit/backup/id",  // no unit type
        "c0ffee/unit/backup.service/",  // empty id
        "c0ffee/unit/backup.service/..",
        "c0ffee/unit/back up.service/id",
    ])
    func anythingElseIsNotARequest(_ name: String) {
        #expect(CredentialRequest.parse(address: Self.abstract(name)) == nil)
    }

    @Test func aPathAddressOrAnEmbeddedNULIsNotARequest() {
        #expect(CredentialRequest.parse(address: Array("/run/x.sock".utf8)) == nil)
        #expect(CredentialRequest.parse(address: [UInt8]()) == nil)
        #expect(CredentialRequest.parse(address: Self.abstract("c0ffee/unit/a.service/id\0x")) == nil)
    }

    @Test(arguments: [
        ("backup.service", "backup.service", true),
        ("backup.service", "backup.timer", false),
        ("backup.service", "xbackup.service", false),
        ("report-*.service", "report-daily.service", true),
        ("report-*.service", "report-.service", true),
        ("report-*.service", "report-daily.timer", false),
        ("report-*.service", "reports.service", false),
        ("*", "anything.service", true),
        ("job?.service", "job1.service", true),
        ("job?.service", "job12.service", false),
        ("job[0-9].service", "job7.service", true),
        ("job[0-9].service", "jobx.service", false),
        ("job[!0-9].service", "jobx.service", true),
        ("job[!0-9].service", "job7.service", false),
        ("a\\*.service", "a*.service", true),
        ("a\\*.service", "ab.service", false),
        ("*@*.service", "backup@home.service", true),
        ("*-*-*.service", "a-b.service", false),
    ])
    func unitGlobsMatchAsFnmatchDoes(_ pattern: String, _ unit: String, _ matches: Bool) {
        #expect(UnitPattern.matches(pattern, unit) == matches)
        #expect(fnmatch(pattern, unit, 0) == (matches ? 0 : FNM_NOMATCH), "fnmatch(3) disagrees")
    }

    @Test func unitPatternsWithSlashesSpacesOrAnOpenBracketAreInvalid() {
        #expect(UnitPattern.isValid("report-*.service"))
        #expect(UnitPattern.isValid("job[0-9].service"))
        #expect(!UnitPattern.isValid(""))
        #expect(!UnitPattern.isValid("a/b.service"))
        #expect(!UnitPattern.isValid("a b.service"))
        #expect(!UnitPattern.isValid("job[0-9.service"))
    }

    @Test func theDecisionServesOnlyAnAllowedUnitATokenAndSaysWhyNot() {
        let request = CredentialRequest(unit: "report-daily.service", id: "acme")
        let token = Secret("tok-1")
        #expect(
            CredentialDecision.decide(request, instance: "acme", units: ["backup.service", "report-*.service"], token: token)
                == .serve(instance: "acme", token: token)
        )
        #expect(
            CredentialDecision.decide(request, instance: nil, units: [], token: nil)
                == .refuse(instance: nil, reason: "no instance has credential id 'acme'")
        )
        #expect(
            CredentialDecision.decide(request, instance: "acme", units: [], token: token)
                == .refuse(instance: "acme", reason: "the instance's [access] names no units")
        )
        #expect(
            CredentialDecision.decide(request, instance: "acme", units: ["backup.service"], token: token)
                == .refuse(instance: "acme", reason: "unit 'report-daily.service' is not in the instance's [access] units")
        )
        #expect(
            CredentialDecision.decide(request, instance: "acme", units: ["report-*"], token: nil, noTokenReason: "failing")
                == .refuse(instance: "acme", reason: "failing")
        )
    }

    static let inline = """
        token_url = "http://127.0.0.1:9101/token"
        [variables]
        client_id = "a"
        client_secret = { file = "/secrets/a" }
        """

    @Test func unitsAloneMakeAValidAccessTableAndCredentialIDIsRead() throws {
        let (definition, diagnostics) = parseInstance(
            "credential_id = \"acme-token\"\n" + Self.inline + "\n[access]\nunits = [\"backup.service\", \"report-*.service\"]\n"
        )
        #expect(diagnostics.isEmpty, "\(diagnostics)")
        let parsed = try #require(definition)
        #expect(parsed.access?.units == ["backup.service", "report-*.service"])
        #expect(parsed.access?.users == [])
        #expect(parsed.credentialID == "acme-token")
    }

    @Test(arguments: [
        ("[access]\nunits = \"backup.service\"\n", "access.units"),
        ("[access]\nunits = [\"a/b.service\"]\n", "access.units"),
        ("[access]\nunits = [1]\n", "access.units"),
        ("[access]\n", "access"),
    ])
    func badUnitsAreConfigErrors(_ table: String, _ key: String) {
        let (definition, diagnostics) = parseInstance(Self.inline + "\n" + table)
        #expect(definition == nil)
        #expect(diagnostics.contains { $0.key == key && $0.severity == .error }, "\(diagnostics)")
    }

    @Test func aBadCredentialIDIsAConfigError() {
        let (definition, diagnostics) = parseInstance("credential_id = \"a/b\"\n" + Self.inline)
        #expect(definition == nil)
        #expect(diagnostics.contains { $0.key == "credential_id" }, "\(diagnostics)")
    }

    /// A units-only `[access]` gives no uid or gid: over the API socket the token is the admins' only.
    @Test func aUnitsOnlyAccessRuleLetsNoSocketCallerRead() {
        let input = ConfigLoader.Input(
            settings: nil,
            instances: [
                ("acme", .success(.init(path: "/c/instances/acme.toml", text: Self.inline + "\n[access]\nunits = [\"b.service\"]\n")))
            ]
        )
        let result = ConfigLoader.load(input) { _ in .success(.init("s")) }
        let policy = result.instances["acme"]?.access
        #expect(policy == AccessPolicy(uids: [], gids: []))
        #expect(policy?.allows(PeerCredentials(uid: 1000, gid: 1000, pid: 1)) == false)
    }

    /// Credential ids are unique: a `credential_id` that is another instance's name or `credential_id` fails its
    /// instance, naming both files; the other instance loads.
    @Test func aDuplicateCredentialIDFailsTheInstanceThatSetsItNamingBothFiles() {
        func file(_ name: String, _ text: String) -> (String, Result<ConfigLoader.File, ConfigDiagnostic>) {
            (name, .success(.init(path: "/c/instances/\(name).toml", text: text)))
        }
        let input = ConfigLoader.Input(
            settings: nil,
            instances: [
                file("first", "credential_id = \"shared\"\n" + Self.inline),
                file("second", "credential_id = \"shared\"\n" + Self.inline),
                file("plain", Self.inline),
                file("third", "credential_id = \"plain\"\n" + Self.inline),
                file("own", "credential_id = \"own\"\n" + Self.inline),
            ]
        )
        let result = ConfigLoader.load(input) { _ in .success(.init("s")) }
        #expect(Set(result.instances.keys) == ["first", "plain", "own"])
        #expect(result.failedInstances == ["second", "third"])
        let messages = result.errors.map(\.description)
        #expect(
            messages.contains {
                $0.hasPrefix("/c/instances/second.toml:1: credential_id: ") && $0.contains("'first' (/c/instances/first.toml)")
            },
            "\(messages)"
        )
        #expect(
            messages.contains {
                $0.hasPrefix("/c/instances/third.toml:1: credential_id: ")
                    && $0.contains("the name of instance 'plain' (/c/instances/plain.toml)")
            },
            "\(messages)"
        )
    }
}
