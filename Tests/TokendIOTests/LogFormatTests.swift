import Foundation
import Logging
import Testing
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
