import Foundation

/// `{{name}}` placeholders in connector values. Names are case-sensitive and exact; spaces inside the braces are
/// ignored (`{{ scope }}`).
public enum Template {
    /// The variable names a template refers to, in order of appearance.
    public static func placeholders(in template: String) -> [String] {
        var names: [String] = []
        _ = render(template) { name in
            names.append(name)
            return ""
        }
        return names
    }

    /// Replaces each placeholder with `value(name)`; a nil from `value` leaves the placeholder's text as it was.
    public static func render(_ template: String, value: (String) -> String?) -> String {
        var output = ""
        var rest = template[...]
        while let open = rest.range(of: "{{") {
            output += rest[..<open.lowerBound]
            let afterOpen = rest[open.upperBound...]
            guard let close = afterOpen.range(of: "}}") else {
                output += rest[open.lowerBound...]
                return output
            }
            let name = afterOpen[..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            if let replacement = value(name) {
                output += replacement
            } else {
                output += rest[open.lowerBound..<close.upperBound]
            }
            rest = afterOpen[close.upperBound...]
        }
        output += rest
        return output
    }
}
