import Foundation
import Synchronization
import Testing
import TokendTestSupport

@testable import TokendCore

/// A directory with access rules, for the router's checks.
struct GuardedDirectory: InstanceDirectory {
    var machines: [String: InstanceStateMachine]
    var policies: [String: AccessPolicy]

    func instance(named name: String) -> InstanceStateMachine? { machines[name] }
    func allInstances() -> [(name: String, machine: InstanceStateMachine)] { machines.map { ($0.key, $0.value) } }
    func access(named name: String) -> AccessPolicy? { policies[name] }
    var configErrors: [String] { ["/etc/tokend/instances/broken.toml:2: token_kye: unknown key"] }
}

/// Every endpoint and status code of the router, with no socket.
@Suite struct APIRoutingTests {
    let router = APIRouter(admin: AdminPolicy(daemonUID: 999, adminGID: 50))
    let directory: GuardedDirectory
    static let alice = PeerCredentials(uid: 1001, gid: 1001, pid: 10)
    static let bob = PeerCredentials(uid: 1002, gid: 1002, pid: 11, groups: [300])
    static let operatorInAdminGroup = PeerCredentials(uid: 1003, gid: 1003, pid: 12, groups: [50])
    static let root = PeerCredentials(uid: 0, gid: 0, pid: 1)

    init() {
        var generator = SeededGenerator(seed: 8)
        var machine = InstanceStateMachine(policy: RefreshPolicy(RefreshSettings()))
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        _ = machine.receivedAndStored(token(lifetime: 600, value: "the-token"), using: &generator)
        directory = GuardedDirectory(
            machines: ["open": machine, "private": machine, "team": machine],
            policies: ["private": AccessPolicy(uids: [1001], gids: []), "team": AccessPolicy(uids: [], gids: [300])]
        )
    }

    func decide(_ method: String, _ target: String, peer: PeerCredentials?, body: String = "") -> APIRouter.Decision {
        router.decide(
            APIRequest(method: APIMethod(method), target: target, body: Array(body.utf8), peer: peer),
            instances: directory,
            now: epoch.addingTimeInterval(100)
        )
    }

    func ask(_ method: String, _ target: String, peer: PeerCredentials?, body: String = "") -> APIResponse {
        router.answer(
            to: APIRequest(method: APIMethod(method), target: target, body: Array(body.utf8), peer: peer),
            instances: directory,
            now: epoch.addingTimeInterval(100)
        )
    }

    @Test(arguments: [
        ("GET", "/v1/tokens/a", APIRouter.Route.token(name: "a")),
        ("GET", "/v1/tokens/a?format=raw", .token(name: "a")),
        ("POST", "/v1/tokens/a/invalidate", .invalidate(name: "a")),
        ("GET", "/v1/tokens/a/watch", .watch(name: "a")),
        ("GET", "/v1/instances", .instances),
        ("POST", "/v1/instances/a/refresh", .refresh(name: "a")),
        ("GET", "/v1/health", .health),
        ("GET", "/metrics", .metrics),
        ("POST", "/v1/tokens/a", .methodNotAllowed),
        ("GET", "/v1/tokens/a/invalidate", .methodNotAllowed),
        ("DELETE", "/v1/instances", .methodNotAllowed),
        ("GET", "/v1/tokens/", .notFound),
        ("GET", "/v2/tokens/a", .notFound),
        ("GET", "/", .notFound),
    ])
    func routes(_ method: String, _ target: String, _ expected: APIRouter.Route) {
        #expect(router.route(APIRequest(method: APIMethod(method), target: target)) == expected)
    }

    @Test(
        arguments: [
            ("/v1/tokens/a", "a"), ("/v1/tokens/a-long-instance-name-past-15", "a-long-instance-name-past-15"),
            ("/v1/tokens/na%C3%AFve", "na%C3%AFve"), ("/v1/tokens/naïve", "naïve"), ("/v1/tokens/", nil), ("/v1/tokens", nil),
            ("/v1/tokens/a/", nil), ("/v1/tokens/a/watch", nil), ("/v1/tokensa", nil), ("/v2/tokens/a", nil), ("", nil),
        ] as [(String, String?)]
    )
    func tokenNames(_ path: String, _ expected: String?) {
        #expect(APIRouter.tokenName(inPath: path) == expected)
    }

    @Test(
        arguments: [
            ("open", alice, 200), ("private", alice, 200), ("private", bob, 404), ("team", bob, 200), ("team", alice, 404),
            ("private", root, 200), ("private", operatorInAdminGroup, 200), ("nope", alice, 404),
        ] as [(String, PeerCredentials, APIStatus)]
    )
    func tokenReadsFollowAccessRules(_ name: String, _ peer: PeerCredentials, _ status: APIStatus) {
        let response = ask("GET", "/v1/tokens/\(name)?format=raw", peer: peer)
        #expect(response.status == status)
        #expect((String(decoding: response.body, as: UTF8.self) == "the-token") == (status == 200))
    }

    @Test func aDeniedCallerNeverSeesTheTokenAnywhere() {
        for target in ["/v1/tokens/private", "/v1/tokens/private?format=header", "/v1/instances", "/v1/health", "/metrics"] {
            let body = String(decoding: ask("GET", target, peer: Self.bob).body, as: UTF8.self)
            #expect(!body.contains("the-token"), "\(target)")
        }
        let listed = ask("GET", "/v1/instances", peer: Self.bob)
        let names = (try? JSONDecoder().decode(API.InstancesBody.self, from: Data(listed.body)))?.instances.map(\.name)
        #expect(names == ["open", "team"])
    }

    @Test func adminEndpointsAreForRootTheDaemonAndTheAdminGroup() {
        let daemon = PeerCredentials(uid: 999, gid: 999, pid: 13)
        for peer in [Self.root, daemon, Self.operatorInAdminGroup] {
            #expect(
                router.refusal(
                    for: .refresh(name: "open"),
                    request: APIRequest(method: "POST", path: "/", peer: peer),
                    instances: directory
                ) == nil
            )
            #expect(router.refusal(for: .metrics, request: APIRequest(method: "GET", path: "/", peer: peer), instances: directory) == nil)
        }
        #expect(ask("POST", "/v1/instances/open/refresh", peer: Self.alice).status == 403)
        #expect(ask("GET", "/metrics", peer: Self.alice).status == 403)
        #expect(
            router.refusal(
                for: .refresh(name: "nope"),
                request: APIRequest(method: "POST", path: "/", peer: Self.root),
                instances: directory
            )?.status == 404
        )
    }

    @Test func minValidAndFormats() {
        #expect(ask("GET", "/v1/tokens/open?min_valid=60", peer: nil).status == 200)
        // The token has 495 s left: a caller that wants 600 s waits for the scheduler.
        #expect(
            decide("GET", "/v1/tokens/open?min_valid=600&format=raw", peer: nil) == .waitForToken(name: "open", minValid: 600, format: .raw)
        )
        #expect(ask("GET", "/v1/tokens/open?min_valid=-1", peer: nil).status == 400)
        #expect(ask("GET", "/v1/tokens/open?min_valid=1.5", peer: nil).status == 400)
        #expect(ask("GET", "/v1/tokens/open?format=yaml", peer: nil).status == 400)
        #expect(TokenQuery.parse(APIRequest(method: "GET", target: "/v1/tokens/open?min_valid=30")) == .success(TokenQuery(minValid: 30)))
        #expect(
            TokenQuery.parse(APIRequest(method: "GET", target: "/v1/tokens/open", accept: "text/plain"))
                == .success(TokenQuery(format: .raw))
        )
    }

    @Test func configErrorsAreListedForAdminsOnly() throws {
        let forRoot = try JSONDecoder().decode(API.InstancesBody.self, from: Data(ask("GET", "/v1/instances", peer: Self.root).body))
        #expect(forRoot.config_errors == ["/etc/tokend/instances/broken.toml:2: token_kye: unknown key"])
        let forAlice = try JSONDecoder().decode(API.InstancesBody.self, from: Data(ask("GET", "/v1/instances", peer: Self.alice).body))
        #expect(forAlice.config_errors == nil)
    }

    @Test func commandsGoToTheScheduler() {
        let root = Self.root
        #expect(decide("POST", "/v1/instances/open/refresh", peer: root) == .refresh(name: "open"))
        #expect(decide("GET", "/v1/tokens/open/watch", peer: nil) == .watch(name: "open"))
        #expect(
            decide("POST", "/v1/tokens/open/invalidate", peer: nil, body: #"{"fingerprint":"0123456789abcdef"}"#)
                == .invalidate(name: "open", fingerprint: "0123456789abcdef")
        )
        #expect(decide("POST", "/v1/tokens/open/invalidate", peer: nil, body: "{}") != .invalidate(name: "open", fingerprint: ""))
        #expect(ask("POST", "/v1/tokens/open/invalidate", peer: nil, body: "{}").status == 400)
        #expect(decide("GET", "/metrics", peer: root) == .metrics)
        guard case .refuse(let refusal) = decide("GET", "/v1/tokens/private", peer: Self.bob) else {
            Issue.record("a denied read is a refusal (logged)")
            return
        }
        // Told apart from an unknown name neither by status nor by body.
        let unknown = ask("GET", "/v1/tokens/privatx", peer: Self.bob)
        #expect(refusal.status == unknown.status && refusal.headers == unknown.headers)
        let unknownBody = String(decoding: unknown.body, as: UTF8.self).replacingOccurrences(of: "privatx", with: "private")
        #expect(String(decoding: refusal.body, as: UTF8.self) == unknownBody)
    }

    @Test func invalidateBodies() {
        #expect(
            router.invalidatedFingerprint(APIRequest(method: "POST", path: "/", body: Array(#"{"fingerprint":"0123456789abcdef"}"#.utf8)))
                == "0123456789abcdef"
        )
        for bad in ["", "{}", #"{"fingerprint":"XYZ"}"#, #"{"fingerprint":"0123456789abcdef0"}"#, "garbage"] {
            #expect(router.invalidatedFingerprint(APIRequest(method: "POST", path: "/", body: Array(bad.utf8))) == nil)
        }
    }

    /// Issue 18, finding 8: `/v1/health` names (and counts) only the instances the caller may read, as
    /// `/v1/instances` does.
    @Test func healthShowsOnlyWhatTheCallerMayRead() throws {
        var generator = SeededGenerator(seed: 3)
        var failing = InstanceStateMachine(policy: RefreshPolicy(RefreshSettings()))
        _ = failing.started(cached: nil, now: epoch, using: &generator)
        _ = failing.fetchFailed(FetchFailure(kind: .permanent, code: "invalid_client", message: "no"), now: epoch, using: &generator)
        var guarded = directory
        guarded.machines["private"] = failing
        func health(_ peer: PeerCredentials?) throws -> (APIStatus, [String: String]) {
            let response = router.answer(
                to: APIRequest(method: "GET", target: "/v1/health", peer: peer),
                instances: guarded,
                now: epoch.addingTimeInterval(100)
            )
            return (response.status, try JSONDecoder().decode(API.HealthBody.self, from: Data(response.body)).reasons)
        }
        #expect(try health(Self.bob) == (200, [:]))
        #expect(try health(Self.alice) == (503, ["private": "invalid_client"]))
        #expect(try health(Self.root) == (503, ["private": "invalid_client"]))
    }

    /// Issue 18, finding 6: after an accepted invalidation, a plain read waits for the replacement being fetched
    /// instead of being told there is no token.
    @Test func aPlainReadWaitsForTheReplacementOfAnInvalidatedToken() {
        var generator = SeededGenerator(seed: 4)
        var machine = InstanceStateMachine(policy: RefreshPolicy(RefreshSettings()))
        _ = machine.started(cached: nil, now: epoch, using: &generator)
        let issued = token(lifetime: 3600, value: "the-token")
        _ = machine.receivedAndStored(issued, using: &generator)
        let later = epoch.addingTimeInterval(100)
        #expect(machine.tokenInvalidated(fingerprint: issued.fingerprint, now: later).outcome == .accepted)
        var replacing = directory
        replacing.machines["open"] = machine
        let decision = router.decide(APIRequest(method: "GET", target: "/v1/tokens/open", peer: nil), instances: replacing, now: later)
        #expect(decision == .waitForToken(name: "open", minValid: 0, format: .json))
    }

    @Test func methodsAndPaths() {
        #expect(ask("PUT", "/v1/tokens/open", peer: nil).status == 405)
        #expect(ask("GET", "/nothing", peer: nil).status == 404)
        #expect(ask("GET", "/v1/health", peer: nil).status == 200)
    }
}

/// The caller's supplementary groups are read only when a decision needs them (issue #21), and then once.
@Suite struct LazyPeerGroupsTests {
    /// A caller whose groups are looked up on demand, with a count of the lookups.
    final class Lookups: Sendable {
        let count = Mutex(0)

        func peer(uid: UInt32, gid: UInt32 = 1000, groups: Set<UInt32> = [300]) -> PeerCredentials {
            PeerCredentials(uid: uid, gid: gid, pid: 7) {
                self.count.withLock { $0 += 1 }
                return groups
            }
        }
    }

    @Test func decisionsTheUidOrThePrimaryGroupSettleReadNoGroups() {
        let lookups = Lookups()
        let named = lookups.peer(uid: 1001)
        #expect(AccessPolicy(uids: [1001], gids: [300]).allows(named))
        #expect(AccessPolicy(uids: [], gids: [1000]).allows(named))
        #expect(!AccessPolicy(uids: [2002], gids: []).allows(named))
        #expect(AdminPolicy(daemonUID: 1001, adminGID: 50).allows(named))
        #expect(!AdminPolicy(daemonUID: 999, adminGID: nil).allows(named))
        #expect(AdminPolicy(daemonUID: 999, adminGID: 50).allows(lookups.peer(uid: 0)))
        #expect(!named.groupsWereRead)
        #expect(lookups.count.withLock { $0 } == 0)
    }

    @Test func aGroupRuleReadsTheGroupsOnceAndDecidesByThem() {
        let lookups = Lookups()
        let member = lookups.peer(uid: 1001)
        #expect(AccessPolicy(uids: [2002], gids: [300]).allows(member))
        #expect(!AccessPolicy(uids: [2002], gids: [301]).allows(member))
        #expect(!AdminPolicy(daemonUID: 999, adminGID: 50).allows(member))
        #expect(member.groups == [300, 1000])
        #expect(member.groupsWereRead)
        #expect(lookups.count.withLock { $0 } == 1)
    }
}
