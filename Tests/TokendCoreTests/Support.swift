import Foundation
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
