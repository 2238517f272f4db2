import Foundation
import TokendCore

/// SplitMix64: a deterministic generator so jitter is testable.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

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
