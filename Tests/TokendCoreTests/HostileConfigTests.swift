import Foundation
import Testing

@testable import TokendCore

/// Config text no one should write, which must come back as a diagnostic, never a crash (issue #9).
@Suite struct HostileConfigTests {
    @Test(arguments: [
        ("[" + String(repeating: "a.", count: 50_000) + "b]\nc = 1\n", 1),
        ("x = 1\n" + String(repeating: "a.", count: 40) + "b = 1\n", 2),
        ("x = " + String(repeating: "[", count: 100_000) + "\n", 1),
        ("[t]\ny = " + String(repeating: "{a=", count: 40) + "1" + String(repeating: "}", count: 40) + "\n", 2),
    ])
    func deepNestingIsRefusedWithItsLine(_ text: String, _ line: Int) {
        switch ConfigDocument.parse(file: "/etc/tokend/instances/deep.toml", text: text) {
        case .success:
            Issue.record("parsed")
        case .failure(let diagnostic):
            #expect(diagnostic.line == line)
            #expect(diagnostic.message.contains("nested deeper than 32 levels"))
        }
    }

    @Test func dotsAndBracketsInStringsAndCommentsDoNotCount() throws {
        let dots = String(repeating: "a.", count: 100)
        let text = """
            # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[ \(dots)
            token_url = "https://\(dots)example/{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{"
            note = '\(dots)[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['
            long = \"\"\"
            \(dots) \\\" [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
            \"\"\"
            literal = '''
            \(dots)'''
            [a.b.c]
            d = [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5, 11.5, 12.5, 13.5, 14.5, 15.5, 16.5, 17.5, 18.5, 19.5, 20.5, 21.5, 22.5, 23.5, 24.5, 25.5, 26.5, 27.5, 28.5, 29.5, 30.5, 31.5, 32.5, 33.5]
            """
        let document = try ConfigDocument.parse(file: "f.toml", text: text).get()
        #expect(document.root["note"] == .string(dots + String(repeating: "[", count: 38)))
    }
}
