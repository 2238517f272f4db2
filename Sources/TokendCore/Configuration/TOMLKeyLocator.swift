import Foundation
import Synchronization

/// Finds the line on which a key is written in TOML text, so that errors can name it.
///
/// TOMLKit reports positions only for syntax errors, not for the values it parsed, so this scans the text once:
/// table headers (`[a.b]`, `[[a]]`) set the current table and `key = …` lines record `table.key`. It skips the
/// inside of multi-line strings. When a path was not written on a line of its own (an inline table's member, say),
/// ``line(of:)`` answers with the line of its nearest written ancestor.
public struct TOMLKeyLocator: Sendable {
    private var lines: [String: Int] = [:]

    public init(text: String) {
        // Over UTF-8 bytes: every byte this looks at (brackets, quotes, `=`, `.`, `#`, blanks, line ends) is ASCII,
        // and walking Characters is a large share of parsing a file.
        let bytes = Array(text.utf8)
        var table: [String] = []
        var inMultiline: [UInt8]? = nil
        var lineNumber = 0
        var lineStart = 0
        while lineStart <= bytes.count {
            // Lines end at "\n"; the "\r" of a CRLF file is trimmed with the trailing blanks.
            let lineEnd = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            lineNumber += 1
            defer { lineStart = lineEnd + 1 }
            let line = Self.trimmed(bytes[lineStart..<lineEnd])
            if let delimiter = inMultiline {
                if Self.occurrences(of: delimiter, in: line) > 0 { inMultiline = nil }
                continue
            }
            guard let first = line.first, first != UInt8(ascii: "#") else { continue }
            if first == UInt8(ascii: "[") {
                let isArray = line.count > 1 && line[line.startIndex + 1] == UInt8(ascii: "[")
                let inner = line.dropFirst(isArray ? 2 : 1)
                guard let end = inner.firstIndex(of: UInt8(ascii: "]")) else { continue }
                table = Self.splitKey(inner[..<end])
                let path = table.joined(separator: ".")
                if lines[path] == nil { lines[path] = lineNumber }
                continue
            }
            guard let equals = Self.assignmentIndex(in: line) else { continue }
            let key = Self.splitKey(line[..<equals])
            guard !key.isEmpty else { continue }
            let path = (table + key).joined(separator: ".")
            if lines[path] == nil { lines[path] = lineNumber }
            let value = line[(equals + 1)...]
            for delimiter in Self.multilineDelimiters where Self.occurrences(of: delimiter, in: value) % 2 == 1 {
                inMultiline = delimiter
                break
            }
        }
    }

    private static let multilineDelimiters: [[UInt8]] = [Array("\"\"\"".utf8), Array("'''".utf8)]

    private static func isBlank(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")
    }

    /// Without leading spaces and tabs, nor trailing ones and a stray CR (as `trimmingBlanks()`).
    private static func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var result = bytes.drop(while: isBlank)
        while let last = result.last, isBlank(last) || last == UInt8(ascii: "\r") { result = result.dropLast() }
        return result
    }

    /// Non-overlapping occurrences of an ASCII delimiter.
    private static func occurrences(of needle: [UInt8], in bytes: ArraySlice<UInt8>) -> Int {
        var count = 0
        var index = bytes.startIndex
        while index + needle.count <= bytes.endIndex {
            if bytes[index..<index + needle.count].elementsEqual(needle) {
                count += 1
                index += needle.count
            } else {
                index += 1
            }
        }
        return count
    }

    /// The line of `path` (dotted), or of its nearest ancestor that is written in the text.
    public func line(of path: [String]) -> Int? {
        var path = path
        while !path.isEmpty {
            if let line = lines[path.joined(separator: ".")] { return line }
            path.removeLast()
        }
        return nil
    }

    private static func assignmentIndex(in line: ArraySlice<UInt8>) -> Int? {
        var quote: UInt8? = nil
        for index in line.indices {
            let byte = line[index]
            if let open = quote {
                if byte == open { quote = nil }
            } else if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") {
                quote = byte
            } else if byte == UInt8(ascii: "=") {
                return index
            }
        }
        return nil
    }

    private static func splitKey(_ text: ArraySlice<UInt8>) -> [String] {
        var parts: [String] = []
        var current: [UInt8] = []
        var quote: UInt8? = nil
        func finish() {
            let part = trimmed(current[...])
            if !part.isEmpty { parts.append(String(decoding: part, as: UTF8.self)) }
            current.removeAll(keepingCapacity: true)
        }
        for byte in text {
            if let open = quote {
                if byte == open { quote = nil } else { current.append(byte) }
            } else if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") {
                quote = byte
            } else if byte == UInt8(ascii: ".") {
                finish()
            } else {
                current.append(byte)
            }
        }
        finish()
        return parts
    }
}

/// A file's text and its ``TOMLKeyLocator``, built the first time a line is asked for: most instance files load without
/// a message that needs one, and building it is a large share of a parse.
///
/// (A file with `[query]`, `[headers]` or `[body]` builds it while parsing: those fields keep the order of their
/// lines.) Kept by each ``InstanceDefinition`` (sharing the text's storage with the config memo) for the messages of
/// later steps.
public final class SourceLines: Sendable, Hashable {
    public let text: String
    private let locator = Mutex<TOMLKeyLocator?>(nil)

    public init(text: String) {
        self.text = text
    }

    /// The line of `path` (dotted), or of its nearest ancestor that is written in the text.
    public func line(of path: [String]) -> Int? {
        locator.withLock { locator in
            if let built = locator { return built.line(of: path) }
            let built = TOMLKeyLocator(text: text)
            locator = built
            return built.line(of: path)
        }
    }

    public static func == (lhs: SourceLines, rhs: SourceLines) -> Bool {
        lhs === rhs || lhs.text == rhs.text
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(text)
    }
}
