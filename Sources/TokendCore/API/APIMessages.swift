import Foundation

/// One request to the socket API, reduced to what the router looks at.
public struct APIRequest: Sendable, Hashable {
    public var method: APIMethod
    /// The path without the query (`/v1/tokens/acme`).
    public var path: String
    public var query: [String: String]
    public var accept: String?
    public var body: [UInt8]
    /// The caller, when the socket could tell; nil means no per-caller checks (the socket's mode decides).
    public var peer: PeerCredentials?

    public init(
        method: APIMethod,
        path: String,
        query: [String: String] = [:],
        accept: String? = nil,
        body: [UInt8] = [],
        peer: PeerCredentials? = nil
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.accept = accept
        self.body = body
        self.peer = peer
    }

    /// Splits a request target (`/v1/tokens/a?format=raw`) into path and decoded query.
    public init(method: APIMethod, target: String, accept: String? = nil, body: [UInt8] = [], peer: PeerCredentials? = nil) {
        // Most targets have no query: then the path is the target itself (no copy, no split).
        var text = target  // withUTF8 reads a native string's bytes in place
        guard text.withUTF8({ $0.contains(UInt8(ascii: "?")) }), let mark = target.utf8.firstIndex(of: UInt8(ascii: "?")) else {
            self.init(method: method, path: target, accept: accept, body: body, peer: peer)
            return
        }
        var query: [String: String] = [:]
        for field in FormURLEncoding.decodeFields(target[target.index(after: mark)...]) where query[field.name] == nil {
            query[field.name] = field.value
        }
        self.init(method: method, path: String(target[..<mark]), query: query, accept: accept, body: body, peer: peer)
    }

    /// The path's segments after the leading slash (`/v1/tokens/a` → `["v1", "tokens", "a"]`).
    public var segments: [String] {
        path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
    }
}

/// An answer of the socket API.
public struct APIResponse: Sendable, Hashable {
    public var status: APIStatus
    public var contentType: String
    public var body: [UInt8]
    public var headers: [TokenRequest.Header]

    public init(status: APIStatus, contentType: String, body: [UInt8], headers: [TokenRequest.Header] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }
}

/// What the router may read of the running instances: a snapshot published by the scheduler.
public protocol InstanceDirectory: Sendable {
    func instance(named name: String) -> InstanceStateMachine?
    /// Whether there is an instance of that name (without copying its state).
    func contains(_ name: String) -> Bool
    func allInstances() -> [(name: String, machine: InstanceStateMachine)]
    /// Who may read the instance's token; nil when the socket's permissions decide.
    func access(named name: String) -> AccessPolicy?
    /// The errors of the last config load and of a rejected reload, for `tokend status`.
    var configErrors: [String] { get }
    /// The fleet's state; nil without `[fleet]`.
    var fleet: API.FleetBody? { get }
    /// Where the instance's served token came from in the fleet; nil without `[fleet]`.
    func fleetRole(named name: String) -> String?
    /// How programs apply the instance's token (`[apply]`); nil for the default.
    func application(named name: String) -> TokenApplication?
}

extension InstanceDirectory {
    public func access(named name: String) -> AccessPolicy? { nil }
    public var configErrors: [String] { [] }
    public var fleet: API.FleetBody? { nil }
    public func fleetRole(named name: String) -> String? { nil }
    public func application(named name: String) -> TokenApplication? { nil }
    public func contains(_ name: String) -> Bool { instance(named: name) != nil }
}
