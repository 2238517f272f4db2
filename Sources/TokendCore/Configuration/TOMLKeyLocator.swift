import Foundation

/// Finds the line on which a key is written in TOML text, so that errors can name it.
///
/// TOMLKit reports positions only for syntax errors, not for the values it parsed, so this scans the text once:
/// table headers (`[a.b]`, `[[a]]`) set the current table and `key = …` lines record `table.key`. It skips the
/// inside of multi-line strings. When a path was not written on a line of its own (an inline table's member, say),
/// ``line(of:)`` answers with the line of its nearest written ancestor.
public struct TOMLKeyLocator: Sendable {
    private var lines: [String: Int] = [:]

    public init(text: String) {
        var table: [String] = []
        var inMultiline: String? = nil
        var lineNumber = 0
        // "\r\n" is one Character in Swift: split on both so that CRLF files get their line numbers too.
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            let line = rawLine.trimmingBlanks()
            if let delimiter = inMultiline {
                if line.contains(delimiter) { inMultiline = nil }
                continue
            }
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") {
                let isArray = line.hasPrefix("[[")
                let inner = line.dropFirst(isArray ? 2 : 1)
                guard let end = inner.firstIndex(of: "]") else { continue }
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
            let value = line[line.index(after: equals)...]
            for delimiter in ["\"\"\"", "'''"] where Self.occurrences(of: delimiter, in: value) % 2 == 1 {
                inMultiline = delimiter
                break
            }
        }
    }

    /// Non-overlapping occurrences of an ASCII `delimiter`, counted over UTF-8.
    private static func occurrences(of delimiter: String, in text: Substring) -> Int {
        let needle = Array(delimiter.utf8)
        let bytes = Array(text.utf8)
        var count = 0
        var index = 0
        while index + needle.count <= bytes.count {
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

    private static func assignmentIndex(in line: Substring) -> String.Index? {
        var quote: Character? = nil
        for index in line.indices {
            let character = line[index]
            if let open = quote {
                if character == open { quote = nil }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == "=" {
                return index
            }
        }
        return nil
    }

    private static func splitKey(_ text: Substring) -> [String] {
        var parts: [String] = []
        var current = ""
        var quote: Character? = nil
        for character in text {
            if let open = quote {
                if character == open { quote = nil } else { current.append(character) }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == "." {
                parts.append(String(current.trimmingBlanks()))
                current = ""
            } else {
                current.append(character)
            }
        }
        parts.append(String(current.trimmingBlanks()))
        return parts.filter { !$0.isEmpty }
    }
}
