import Foundation
import Logging
import Testing
import TokendCore
import TokendTestSupport

@testable import TokendIO

#if canImport(Glibc)
import Glibc
#endif

/// The two log line formats: `<N>` prefixes for journald, timestamped lines otherwise.
@Suite struct LogFormatTests {
    @Test(arguments: [
        (Logger.Level.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3), (.critical, 2),
    ])
    func journalLinesCarryTheSyslogPriority(level: Logger.Level, priority: Int) {
        let line = TokendLogHandler.render(level: level, message: "token refreshed", metadata: ["instance": "billing"], journal: true)
        #expect(line == "<\(priority)>token refreshed instance=billing\n")
    }

    @Test func readableLinesStartWithATimestampAndTheLevel() throws {
        let line = TokendLogHandler.render(level: .warning, message: "fetch failed", metadata: [:], journal: false)
        let fields = line.split(separator: " ")
        #expect(fields.count == 4)
        let stamp = try #require(fields.first).description
        #expect(ISO8601DateFormatter.withFractionalSeconds.date(from: stamp) != nil, "\(stamp)")
        #expect(fields[1] == "WARNING")
        #expect(!line.hasPrefix("<"))
    }

    /// The hand-built timestamp reads as ISO8601DateFormatter writes it: over 5,000 seeded instants from 1970 to
    /// 2200 (leap days and year ends among them), whole milliseconds, and sub-millisecond parts cut, not rounded.
    @Test func timestampsMatchISO8601DateFormatter() {
        let formatter = ISO8601DateFormatter.withFractionalSeconds
        var generator = SeededGenerator(seed: 8)
        var instants = [0, 951_782_400, 951_868_799, 1_709_164_800, 4_107_542_399, 1_795_956_265]
        for _ in 0..<5_000 { instants.append(Int.random(in: 0...7_258_118_400, using: &generator)) }
        for seconds in instants {
            let milliseconds = Int.random(in: 0...999, using: &generator)
            let date = Date(timeIntervalSince1970: Double(seconds) + Double(milliseconds) / 1000)
            let expected = formatter.string(from: date)
            #expect(TokendLogHandler.timestamp(seconds: seconds, nanoseconds: milliseconds * 1_000_000) == expected)
            #expect(TokendLogHandler.timestamp(seconds: seconds, nanoseconds: milliseconds * 1_000_000 + 999_999) == expected)
        }
        #expect(TokendLogHandler.timestamp(seconds: 1_795_956_265, nanoseconds: 999_999_999) == "2026-11-29T12:44:25.999Z")
    }

    @Test func newlinesOfEveryKindBecomeSpaces() {
        for newline in ["\n", "\r", "\r\n", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}"] {
            #expect(TokendLogHandler.oneLine("a\(newline)b") == "a b", "\(Array(newline.unicodeScalars))")
        }
        #expect(TokendLogHandler.oneLine("é ≠ — ü") == "é ≠ — ü")
    }

    @Test func oneEventIsOneLineWithSortedQuotedMetadata() {
        let line = TokendLogHandler.render(
            level: .error,
            message: "config error\nsecond line",
            metadata: ["instance": "a b", "error": "line1\nline2 \"quoted\"", "code": ""],
            journal: true
        )
        #expect(line == #"<3>config error second line code="" error="line1 line2 \"quoted\"" instance="a b""# + "\n")
    }

    @Test func journalStreamMustNameStderrItself() throws {
        var info = stat()
        #expect(fstat(STDERR_FILENO, &info) == 0)
        #expect(TokendLogHandler.stderrIsJournal("\(info.st_dev):\(info.st_ino)"))
        #expect(!TokendLogHandler.stderrIsJournal("\(info.st_dev):\(info.st_ino &+ 1)"))
        #expect(!TokendLogHandler.stderrIsJournal(nil))
        #expect(!TokendLogHandler.stderrIsJournal(""))
        #expect(!TokendLogHandler.stderrIsJournal("garbage"))
    }
}

extension ISO8601DateFormatter {
    static var withFractionalSeconds: ISO8601DateFormatter {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }
}
