// One libFuzzer binary for every harness: `TOKEND_FUZZ_TARGET=<target> tokend-fuzz [libFuzzer options] [corpus
// dirs]`, where target is config, template, response or router. Each harness feeds the bytes to pure TokendCore
// code; a crash, a trap, an AddressSanitizer report or a timeout is a finding. Built by `make fuzz` with
// -sanitize=fuzzer,address.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TokendCore

let fixedNow = Date(timeIntervalSince1970: 1_800_000_000)

/// Config parser and validator: the bytes as an instance file, as a connector it names, and as tokend.toml.
func fuzzConfig(_ bytes: [UInt8]) {
    let text = String(decoding: bytes, as: UTF8.self)
    let file = ConfigLoader.File(path: "/fuzz/instances/fuzz.toml", text: text)
    let connector = ConfigLoader.File(path: "/fuzz/connectors/fuzz.toml", text: text)
    let settings = ConfigLoader.File(path: "/fuzz/tokend.toml", text: text)
    let input = ConfigLoader.Input(settings: .success(settings), connectors: [("fuzz", .success(connector))], instances: [("fuzz", .success(file))])
    let loaded = ConfigLoader.load(input) { source in
        if case .literal(let value) = source { return .success(.init(value)) }
        return .success(.init("fuzz-secret"))
    }
    for (_, resolved) in loaded.instances { _ = resolved.request.description }
    for diagnostic in loaded.diagnostics { _ = diagnostic.description }
}

/// The template renderer: the first half as a template, the second as the values.
func fuzzTemplate(_ bytes: [UInt8]) {
    let text = String(decoding: bytes, as: UTF8.self)
    let middle = text.index(text.startIndex, offsetBy: text.count / 2)
    let template = String(text[..<middle])
    let values = String(text[middle...])
    _ = Template.placeholders(in: template)
    let rendered = Template.render(template) { name in name.count % 3 == 0 ? nil : values + name }
    _ = Template.render(rendered) { _ in template }
    _ = FormURLEncoding.encode(text)
    _ = FormURLEncoding.decodeFields(text[...])
}

/// The token response parser: byte 0 picks the status, the next line is a Retry-After value, the rest the body.
func fuzzResponse(_ bytes: [UInt8]) {
    guard let first = bytes.first else { return }
    let statuses = [200, 201, 400, 401, 403, 429, 500, 503]
    let rest = Array(bytes.dropFirst())
    let newline = rest.firstIndex(of: 10) ?? 0
    let retryAfter = String(decoding: rest[..<newline], as: UTF8.self)
    let body = Array(rest[newline...])
    for shape in [TokenResponseParser.Shape(), .init(tokenKey: "data.token", expiresInKey: "data.ttl", expiresAtKey: "expires_at", defaultTTL: 60)] {
        let result = TokenResponseParser.parse(
            status: statuses[Int(first) % statuses.count],
            body: body,
            retryAfter: retryAfter.isEmpty ? nil : retryAfter,
            shape: shape,
            requestedScope: "read",
            now: fixedNow
        )
        if case .success(let token) = result {
            // Whatever the provider claims, the numbers the API and logs derive from a token must fit.
            precondition(token.lifetime > 0 && token.lifetime <= TokenResponseParser.maxLifetime)
            _ = Int(token.expiresAt.timeIntervalSince1970)
            _ = token.fingerprint
        }
        if case .failure(let failure) = result, let wait = failure.retryAfter {
            precondition(wait >= 0 && wait <= RetryAfter.maxSeconds)
        }
    }
    _ = JWTClaims.expiry(of: String(decoding: body, as: UTF8.self))
}

struct NoInstances: InstanceDirectory {
    func instance(named name: String) -> InstanceStateMachine? { nil }
    func allInstances() -> [(name: String, machine: InstanceStateMachine)] { [] }
}

/// HTTP request routing: the first line is "METHOD target", the second an Accept value, the rest the body.
func fuzzRouter(_ bytes: [UInt8]) {
    let text = String(decoding: bytes, as: UTF8.self)
    let lines = text.split(separator: "\n", maxSplits: 2, omittingEmptySubsequences: false)
    let requestLine = lines.first.map(String.init) ?? ""
    let method = String(requestLine.prefix { $0 != " " })
    let target = String(requestLine.drop { $0 != " " }.dropFirst())
    let accept = lines.count > 1 ? String(lines[1]) : nil
    let body = lines.count > 2 ? Array(lines[2].utf8) : []
    let request = APIRequest(method: APIMethod(method), target: target, accept: accept, body: body, peer: nil)
    let router = APIRouter()
    let route = router.route(request)
    _ = router.refusal(for: route, request: request, instances: NoInstances())
    _ = router.decide(request, instances: NoInstances(), now: fixedNow, isReady: false)
    _ = router.invalidatedFingerprint(request)
    _ = TokenQuery.parse(request)
}

/// The harness named by `TOKEND_FUZZ_TARGET`, picked once.
let selectedHarness: @Sendable ([UInt8]) -> Void = {
    let harnesses: [String: @Sendable ([UInt8]) -> Void] = [
        "config": fuzzConfig, "template": fuzzTemplate, "response": fuzzResponse, "router": fuzzRouter,
    ]
    let name = ProcessInfo.processInfo.environment["TOKEND_FUZZ_TARGET"] ?? ""
    guard let harness = harnesses[name] else {
        let usage = "usage: TOKEND_FUZZ_TARGET=\(harnesses.keys.sorted().joined(separator: "|")) tokend-fuzz [libFuzzer options] [corpus…]\n"
        FileHandle.standardError.write(Data(usage.utf8))
        exit(2)
    }
    return harness
}()

/// libFuzzer's entry point; its own `main` drives the run.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selectedHarness(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}
