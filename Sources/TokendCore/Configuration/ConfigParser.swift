import Foundation

/// Turns the text of config files into definitions, or into diagnostics that name file, line and key.
public enum ConfigParser {
    /// Whether `name` is a valid instance (or connector) name: `[A-Za-z0-9][A-Za-z0-9._-]*`.
    public static func isValidInstanceName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCIIAlphanumeric else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCIIAlphanumeric || $0 == "." || $0 == "_" || $0 == "-" }
            && name.utf8.count <= 200
    }

    /// What a referencing instance may find about its connector.
    public enum ConnectorLookup: Sendable, Hashable {
        case found(ConnectorDefinition)
        /// The connector file exists but has errors (reported on their own).
        case invalid
        case missing
    }

    /// Checks the name a file gives its connector or instance, then parses the TOML.
    static func open(name: String, file: String, text: String, what: String) -> Result<ConfigDocument, ConfigDiagnostic> {
        guard isValidInstanceName(name) else {
            return .failure(
                ConfigDiagnostic(
                    file: file,
                    line: nil,
                    message: "invalid \(what) name '\(name)': expected letters, digits, '.', '_' or '-', starting with a letter or digit"
                )
            )
        }
        return ConfigDocument.parse(file: file, text: text)
    }

    static func isValidVariableName(_ name: String) -> Bool {
        !name.isEmpty && name.unicodeScalars.allSatisfy { $0.isASCIIAlphanumeric || $0 == "_" || $0 == "-" }
    }

    /// RFC 9110 `token`: the characters a header name may use.
    static func isHeaderName(_ name: String) -> Bool {
        !name.isEmpty
            && name.unicodeScalars.allSatisfy { $0.isASCIIAlphanumeric || "!#$%&'*+-.^_`|~".unicodeScalars.contains($0) }
    }
}
