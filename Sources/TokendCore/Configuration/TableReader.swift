import Foundation

/// Reads one TOML table against a schema: typed getters record what was read, and ``finish()`` reports every key
/// that nobody asked for as an unknown key (with a "did you mean" when a known key is close).
struct TableReader {
    let document: ConfigDocument
    let path: [String]
    let table: [String: ConfigDocument.Value]
    private(set) var known: Set<String> = []
    private(set) var diagnostics: [ConfigDiagnostic] = []

    init(document: ConfigDocument, path: [String], table: [String: ConfigDocument.Value]) {
        self.document = document
        self.path = path
        self.table = table
    }

    func keyName(_ key: String) -> String {
        (path + [key]).joined(separator: ".")
    }

    mutating func fail(_ key: String, _ message: String) {
        diagnostics.append(
            ConfigDiagnostic(
                file: document.file,
                line: document.line(of: path + [key]),
                key: keyName(key),
                message: message
            )
        )
    }

    mutating func warn(_ key: String, _ message: String) {
        diagnostics.append(
            ConfigDiagnostic(
                file: document.file,
                line: document.line(of: path + [key]),
                key: keyName(key),
                message: message,
                severity: .warning
            )
        )
    }

    mutating func appendDiagnostic(_ diagnostic: ConfigDiagnostic) {
        diagnostics.append(diagnostic)
    }

    mutating func raw(_ key: String) -> ConfigDocument.Value? {
        known.insert(key)
        return table[key]
    }

    mutating func string(_ key: String) -> String? {
        guard let value = raw(key) else { return nil }
        guard case .string(let text) = value else {
            fail(key, "expected a string, found \(value.kindDescription)")
            return nil
        }
        return text
    }

    mutating func bool(_ key: String) -> Bool? {
        guard let value = raw(key) else { return nil }
        guard case .bool(let flag) = value else {
            fail(key, "expected true or false, found \(value.kindDescription)")
            return nil
        }
        return flag
    }

    mutating func integer(_ key: String, range: ClosedRange<Int>) -> Int? {
        guard let value = raw(key) else { return nil }
        guard case .integer(let number) = value, range.contains(number) else {
            fail(key, "expected a whole number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return number
    }

    mutating func fraction(_ key: String, range: ClosedRange<Double>) -> Double? {
        guard let value = raw(key) else { return nil }
        let number: Double
        switch value {
        case .double(let double): number = double
        case .integer(let integer): number = Double(integer)
        default:
            fail(key, "expected a number from \(range.lowerBound) to \(range.upperBound), found \(value.kindDescription)")
            return nil
        }
        guard range.contains(number) else {
            fail(key, "expected a number from \(range.lowerBound) to \(range.upperBound), found \(number)")
            return nil
        }
        return number
    }

    /// A duration written as `"30s"`, `"5m"`, `"1h"` or a number of seconds.
    mutating func duration(_ key: String) -> Double? {
        guard let value = raw(key) else { return nil }
        switch value {
        case .integer(let seconds) where seconds >= 0:
            return Double(seconds)
        case .double(let seconds) where seconds >= 0 && seconds.isFinite:
            return seconds
        case .string(let text):
            if let seconds = DurationParser.seconds(from: text) { return seconds }
            fail(key, "expected a duration such as \"30s\", \"5m\" or \"1h\", found \"\(text)\"")
            return nil
        default:
            fail(key, "expected a duration such as \"30s\", \"5m\" or \"1h\"")
            return nil
        }
    }

    mutating func subtable(_ key: String) -> [String: ConfigDocument.Value]? {
        guard let value = raw(key) else { return nil }
        guard case .table(let table) = value else {
            fail(key, "expected a table, found \(value.kindDescription)")
            return nil
        }
        return table
    }

    /// Reports every key of the table that was not read, and returns all diagnostics collected.
    mutating func finish() -> [ConfigDiagnostic] {
        for key in table.keys.sorted() where !known.contains(key) {
            var message = "unknown key"
            if let suggestion = Self.closest(to: key, in: known) {
                message += " (did you mean '\(suggestion)'?)"
            }
            fail(key, message)
        }
        return diagnostics
    }

    static func closest(to key: String, in candidates: Set<String>) -> String? {
        let scored = candidates.map { ($0, editDistance(key.lowercased(), $0.lowercased())) }
        guard let best = scored.min(by: { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }) else { return nil }
        return best.1 <= max(2, key.count / 3) ? best.0 : nil
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
