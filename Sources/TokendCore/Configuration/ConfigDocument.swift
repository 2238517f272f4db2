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
    public let locator: TOMLKeyLocator

    /// Parses `text`; a syntax error becomes a diagnostic at the line TOMLKit reports.
    public static func parse(file: String, text: String) -> Result<ConfigDocument, ConfigDiagnostic> {
        if text.utf8.contains(0) {
            return .failure(ConfigDiagnostic(file: file, line: nil, message: "file contains a NUL byte; expected TOML text"))
        }
        do {
            let table = try TOMLTable(string: text)
            let root = convert(table)
            return .success(ConfigDocument(file: file, root: root, locator: TOMLKeyLocator(text: text)))
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

    /// The line a dotted key path was written on (or its nearest ancestor's).
    public func line(of path: [String]) -> Int? {
        locator.line(of: path)
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
