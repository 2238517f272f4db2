import Foundation
import TOMLKit

/// A parsed TOML file as plain values, with the lines its keys were written on.
public struct ConfigDocument: Sendable {
    /// A TOML value, copied out of TOMLKit so that the rest of the core never touches its C++ nodes.
    public indirect enum Value: Sendable, Hashable {
        case string(String)
        case integer(Int)
        case double(Double)
        case bool(Bool)
        case dateTime(String)
        case array([Value])
        case table([String: Value])

        /// What a message calls a value of this kind ("a string", "a table", …).
        public var kindDescription: String {
            switch self {
            case .string: "a string"
            case .integer: "an integer"
            case .double: "a number"
            case .bool: "a boolean"
            case .dateTime: "a date"
            case .array: "an array"
            case .table: "a table"
            }
        }
    }

    public let file: String
    public let root: [String: Value]
    /// The text, with the line of each key found when first asked for.
    public let source: SourceLines

    /// Parses `text`; a syntax error becomes a diagnostic at the line TOMLKit reports.
    public static func parse(file: String, text: String) -> Result<ConfigDocument, ConfigDiagnostic> {
        if text.utf8.contains(0) {
            return .failure(ConfigDiagnostic(file: file, line: nil, message: "file contains a NUL byte; expected TOML text"))
        }
        if let line = lineNestedDeeperThan(maxNesting, in: text) {
            return .failure(
                ConfigDiagnostic(file: file, line: line, message: "keys or values nested deeper than \(maxNesting) levels")
            )
        }
        do {
            let table = try TOMLTable(string: text)
            let root = convert(table)
            // TOMLKit 0.6 never deletes a parsed tree (TOMLTable has no deinit). Clearing the root makes toml++ free
            // every node under it, which is nearly all of the tree, so a parse no longer leaks (docs/reliability.md).
            table.clear()
            return .success(ConfigDocument(file: file, root: root, source: SourceLines(text: text)))
        } catch let error as TOMLParseError {
            return .failure(
                ConfigDiagnostic(
                    file: file,
                    line: error.source.begin.line,
                    message: "TOML syntax error: \(error.description)"
                )
            )
        } catch {
            return .failure(ConfigDiagnostic(file: file, line: nil, message: "TOML syntax error"))
        }
    }

    /// The deepest nesting a config file may use (tokend's own files need 3): `[a.a.a.…]` 50,000 levels deep
    /// overflows the stack of the TOML parser, so such a file is refused before it gets there.
    public static let maxNesting = 32

    /// The first line where dotted-key segments and open brackets and braces, counted together outside strings and
    /// comments, exceed `limit`; nil when none does.
    ///
    /// One pass, no recursion.
    static func lineNestedDeeperThan(_ limit: Int, in text: String) -> Int? {
        let bytes = Array(text.utf8)
        let (newline, hash, quote, apostrophe, backslash) = (UInt8(10), UInt8(35), UInt8(34), UInt8(39), UInt8(92))
        var line = 1
        var depth = 0
        var segments = 0
        var string: (quote: UInt8, multiline: Bool)?
        var escaped = false
        var inComment = false
        var index = 0
        func tripled(_ byte: UInt8, at start: Int) -> Bool {
            start + 2 < bytes.count && bytes[start] == byte && bytes[start + 1] == byte && bytes[start + 2] == byte
        }
        while index < bytes.count {
            let byte = bytes[index]
            if byte == newline {
                line += 1
                inComment = false
                segments = 0
                if string?.multiline == false { string = nil }
            } else if inComment {
            } else if let open = string {
                if escaped {
                    escaped = false
                } else if open.quote == quote && byte == backslash {
                    escaped = true
                } else if byte == open.quote && (!open.multiline || tripled(byte, at: index)) {
                    string = nil
                    if open.multiline { index += 2 }
                }
            } else {
                switch byte {
                case hash: inComment = true
                case quote, apostrophe:
                    let opened = (quote: byte, multiline: tripled(byte, at: index))
                    string = opened
                    if opened.multiline { index += 2 }
                case UInt8(ascii: "["), UInt8(ascii: "{"): depth += 1
                case UInt8(ascii: "]"), UInt8(ascii: "}"): depth = max(0, depth - 1)
                case UInt8(ascii: "."): segments += 1
                case UInt8(ascii: "="), UInt8(ascii: ","): segments = 0
                default: break
                }
                if depth + segments > limit { return line }
            }
            index += 1
        }
        return nil
    }

    /// The line a dotted key path was written on (or its nearest ancestor's).
    public func line(of path: [String]) -> Int? {
        source.line(of: path)
    }

    private static func convert(_ table: TOMLTable) -> [String: Value] {
        var result: [String: Value] = [:]
        for key in table.keys {
            if let value = table[key] {
                result[key] = convert(value)
            }
        }
        return result
    }

    private static func convert(_ value: any TOMLValueConvertible) -> Value {
        switch value.type {
        case .table:
            return .table(value.table.map(convert) ?? [:])
        case .array:
            guard let array = value.array else { return .array([]) }
            return .array(array.map { convert($0) })
        case .string:
            return .string(value.string ?? "")
        case .int:
            return .integer(value.int ?? 0)
        case .double:
            return .double(value.double ?? 0)
        case .bool:
            return .bool(value.bool ?? false)
        case .date, .time, .dateTime:
            return .dateTime(value.debugDescription)
        }
    }
}
