import Foundation

/// `{{name}}` placeholders in connector values.
///
/// Names are case-sensitive and exact; spaces inside the braces are ignored (`{{ scope }}`).
public enum Template {
    /// A run of literal text, or a placeholder with the text it was written as.
    public enum Piece: Sendable, Hashable {
        case literal(String)
        case placeholder(name: String, original: String)
    }

    /// Visits the template's pieces in order.
    ///
    /// An unclosed `{{` is literal text.
    public static func walk(_ template: String, _ visit: (Piece) -> Void) {
        var rest = template[...]
        while let open = rest.range(of: "{{") {
            let afterOpen = rest[open.upperBound...]
            guard let close = afterOpen.range(of: "}}") else { break }
            if open.lowerBound > rest.startIndex { visit(.literal(String(rest[..<open.lowerBound]))) }
            let name = String(afterOpen[..<close.lowerBound].trimmingBlanks())
            visit(.placeholder(name: name, original: String(rest[open.lowerBound..<close.upperBound])))
            rest = afterOpen[close.upperBound...]
        }
        if !rest.isEmpty { visit(.literal(String(rest))) }
    }

    /// The variable names a template refers to, in order of appearance.
    public static func placeholders(in template: String) -> [String] {
        var names: [String] = []
        walk(template) { piece in
            if case .placeholder(let name, _) = piece { names.append(name) }
        }
        return names
    }

    /// Replaces each placeholder with `value(name)`; a nil from `value` leaves the placeholder's text as it was.
    public static func render(_ template: String, value: (String) -> String?) -> String {
        var output = ""
        walk(template) { piece in
            switch piece {
            case .literal(let text): output += text
            case .placeholder(let name, let original): output += value(name) ?? original
            }
        }
        return output
    }
}
