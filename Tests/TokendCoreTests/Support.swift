import Foundation
import Testing
import TokendCore
import TokendTestSupport

let epoch = Date(timeIntervalSince1970: 1_800_000_000)

func token(obtained: Date = epoch, lifetime: Double, value: String = "tok") -> IssuedToken {
    IssuedToken(
        accessToken: Secret(value),
        tokenType: "Bearer",
        scope: nil,
        obtainedAt: obtained,
        expiresAt: obtained.addingTimeInterval(lifetime)
    )
}

func parseInstance(_ text: String, name: String = "alpha") -> (InstanceDefinition?, [ConfigDiagnostic]) {
    let result = ConfigParser.parseInstance(name: name, file: "/etc/tokend/instances/\(name).toml", text: text)
    return (result.definition, result.diagnostics)
}

extension APIRouter {
    /// The answer the router gives `request` at once; a decision that goes to the scheduler fails the test.
    func answer(
        to request: APIRequest,
        instances: some InstanceDirectory,
        now: Date,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> APIResponse {
        switch decide(request, instances: instances, now: now) {
        case .answer(let response), .refuse(let response):
            return response
        case let decision:
            Issue.record("not answered at once: \(decision)", sourceLocation: sourceLocation)
            return APIResponse(status: 500, contentType: "text/plain", body: [])
        }
    }
}

extension InstanceStateMachine {
    /// The endpoint issued `issued` and its cache write is done: the two events a fetched token brings.
    mutating func receivedAndStored(_ issued: IssuedToken, using generator: inout some RandomNumberGenerator) -> [Action] {
        tokenReceived(issued) + tokenStored(fingerprint: issued.fingerprint, using: &generator)
    }
}
