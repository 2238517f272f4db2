import Foundation
import Testing
import TokendCore
import TokendTestSupport

@Suite struct TokenAnswersTests {
    let router = APIRouter()

    static func format(_ random: inout SeededGenerator) -> TokenFormat {
        switch random.next() % 5 {
        case 0: .raw
        case 1: .header
        default: .json
        }
    }

    /// Over seeded moments and formats, the kept answers are the router's, byte for byte.
    @Test func answersAreTheRoutersAtEveryMoment() {
        var random = SeededGenerator(seed: 8)
        let issued = token(lifetime: 3_600, value: "secret-token-1")
        var answers = TokenAnswers()
        var now = epoch
        for round in 0..<5_000 {
            // Mostly small steps (many answers within one second), now and then a jump, sometimes backwards.
            let step = random.next() % 10 == 0 ? Double(random.next() % 400) - 100 : Double(random.next() % 300) / 1_000
            now = now.addingTimeInterval(step)
            let format = Self.format(&random)
            let kept = answers.answer(name: "alpha", token: issued, format: format, now: now, router: router)
            let fresh = router.tokenResponse(name: "alpha", token: issued, format: format, now: now)
            #expect(kept == fresh, "round \(round) at \(now.timeIntervalSince(epoch)) s")
        }
    }
}
