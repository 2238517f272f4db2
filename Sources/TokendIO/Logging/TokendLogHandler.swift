import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Logs one line per event to stderr: `<N>` syslog priority prefixes (sd-daemon.h levels) when journald reads the
/// stream (`JOURNAL_STREAM` names stderr's device and inode), a timestamped readable line otherwise.
///
/// Metadata (the instance's name among it) follows as `key=value`; newlines in values become spaces, so one event is
/// one line.
public struct TokendLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let journal: Bool

    public init(label: String, level: Logger.Level, journal: Bool) {
        self.label = label
        self.logLevel = level
        self.journal = journal
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Whether journald reads our stderr: `JOURNAL_STREAM` is `<device>:<inode>` of the stream systemd connected,
    /// and stderr is still that stream (not redirected by a wrapper or a shell).
    public static func stderrIsJournal(_ journalStream: String?) -> Bool {
        guard let parts = journalStream?.split(separator: ":"), parts.count == 2,
            let device = UInt64(parts[0]), let inode = UInt64(parts[1])
        else { return false }
        var info = stat()
        guard fstat(STDERR_FILENO, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let line = Self.render(level: event.level, message: event.message.description, metadata: merged, journal: journal)
        // One write(2) per line: lines from several threads never interleave.
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            guard let base = buffer.baseAddress else { return }
            var offset = 0
            while offset < buffer.count {
                let count = write(STDERR_FILENO, base + offset, buffer.count - offset)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { return }
                offset += count
            }
        }
    }

    /// One line, newline-terminated: `<N>message key=value…` for journald, `TIMESTAMP LEVEL message key=value…`
    /// otherwise.
    public static func render(level: Logger.Level, message: String, metadata: Logger.Metadata, journal: Bool) -> String {
        var line = journal ? "<\(priority(level))>" : "\(timestamp()) \(level.rawValue.uppercased()) "
        line += oneLine(message)
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            line += " \(key)=\(quoted("\(value)"))"
        }
        return line + "\n"
    }

    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    static func quoted(_ value: String) -> String {
        let text = oneLine(value)
        return text.utf8.contains(UInt8(ascii: " ")) || text.isEmpty
            ? "\"\(text.replacingOccurrences(of: "\"", with: "\\\""))\"" : text
    }

    /// `text` with every newline (as `Character.isNewline` has them) made a space.
    ///
    /// Most values have none, and the check is a scan of the bytes: a newline is \n, \v, \f, \r, U+0085, U+2028 or
    /// U+2029, whose UTF-8 starts with a byte from 0x0A–0x0D, 0xC2 or 0xE2.
    static func oneLine(_ text: String) -> String {
        guard text.utf8.contains(where: { (0x0A...0x0D).contains($0) || $0 == 0xC2 || $0 == 0xE2 }) else { return text }
        return String(text.map { $0.isNewline ? " " : $0 })
    }

    /// Now as `2026-11-29T12:46:00.982Z`.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return timestamp(seconds: Int(now.tv_sec), nanoseconds: Int(now.tv_nsec))
    }

    /// An instant in Unix time as ISO 8601 in UTC with milliseconds (truncated), as `ISO8601DateFormatter` writes it
    /// with `.withInternetDateTime` and `.withFractionalSeconds`; built by hand because that formatter is too slow to
    /// run for every line and pulls ICU's data into memory.
    static func timestamp(seconds: Int, nanoseconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func digits(_ value: Int32, _ count: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, count - text.count)) + text
        }
        return digits(parts.tm_year + 1900, 4) + "-" + digits(parts.tm_mon + 1, 2) + "-" + digits(parts.tm_mday, 2)
            + "T" + digits(parts.tm_hour, 2) + ":" + digits(parts.tm_min, 2) + ":" + digits(parts.tm_sec, 2) + "."
            + digits(Int32(nanoseconds / 1_000_000), 3) + "Z"
    }
}
