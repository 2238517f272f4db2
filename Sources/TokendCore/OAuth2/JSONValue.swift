import Foundation

/// Any JSON value, decoded strictly (a boolean is never a number).
public enum JSONValue: Sendable, Hashable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let bool = try? container.decode(Bool.self) {
            self = .bool(bool)
        } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else if let string = try? container.decode(String.self) {
            self = .string(string)
        } else if let array = try? container.decode([JSONValue].self) {
            self = .array(array)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// Parses bytes; nil when they are not JSON.
    public static func parse(_ bytes: [UInt8]) -> JSONValue? {
        guard !bytes.isEmpty else { return nil }
        return try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))
    }

    /// The value at a dotted path (`data.token`); nil when absent or null.
    public func value(at path: String) -> JSONValue? {
        var current = self
        for part in path.split(separator: ".") {
            guard case .object(let object) = current, let next = object[String(part)] else { return nil }
            current = next
        }
        if case .null = current { return nil }
        return current
    }

    public var stringValue: String? {
        if case .string(let string) = self { return string }
        return nil
    }

    /// A number, or a string that holds one.
    public var numberValue: Double? {
        switch self {
        case .number(let number): return number
        case .string(let string): return Double(string.trimmingCharacters(in: .whitespaces))
        default: return nil
        }
    }

    public var objectKeys: [String] {
        if case .object(let object) = self { return object.keys.sorted() }
        return []
    }
}
