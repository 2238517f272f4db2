#if canImport(Glibc)
import Glibc
#endif

/// The everyday `token`, `status` and `refresh` forms, read by hand before ArgumentParser runs (issue #21).
///
/// ArgumentParser's reflection over the command tree (protocol conformance lookups that scan the whole binary) cost
/// more than the rest of a `tokend token` call. These forms are recognised here and run the very code the parsed
/// commands run (`Token.fetch`, `Status.show`, `Refresh.start`); anything else (help, an unknown or repeated flag, a
/// value that is not plainly valid, a usage error) is left to the parser, which keeps every message and exit status
/// of its own. `TOKEND_CLI_FULL_PARSER=1` turns this path off, so tests can compare the two.
enum QuickCommand: Equatable {
    case token(socket: String?, name: String, format: Token.Format, curlHeader: Bool, minValid: Int?)
    case status(socket: String?, json: Bool)
    case refresh(socket: String?, name: String)

    /// The command for `arguments` (without the program name), or nil when the parser must decide.
    ///
    /// Plain arrays and optionals only: a Set or a Dictionary here would cost a protocol conformance lookup (a scan
    /// of the whole binary's conformance table) at the first use of each new generic type.
    init?(_ arguments: [String]) {
        guard let subcommand = arguments.first else { return nil }
        let valued: [String]
        let flagNames: [String]
        switch subcommand {
        case "token":
            valued = ["--socket", "--format", "--min-valid"]
            flagNames = ["--curl-header"]
        case "status":
            valued = ["--socket"]
            flagNames = ["--json"]
        case "refresh":
            valued = ["--socket"]
            flagNames = []
        default:
            return nil
        }
        var values: [String?] = [nil, nil, nil]
        var flagged = false
        var positionals: [String] = []
        var index = 1
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("-") else {
                guard !argument.isEmpty else { return nil }
                positionals.append(argument)
                continue
            }
            let name: String
            let value: String
            if let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                value = String(argument[argument.index(after: equals)...])
            } else if flagNames.contains(argument) {
                // A repeated flag: the parser decides.
                guard !flagged else { return nil }
                flagged = true
                continue
            } else {
                guard index < arguments.count else { return nil }
                name = argument
                value = arguments[index]
                index += 1
            }
            // An unknown option, a value the parser might read as a flag, an empty one, or a repeated option: the
            // parser decides.
            guard let slot = valued.firstIndex(of: name), !value.isEmpty, !value.hasPrefix("-"), values[slot] == nil else { return nil }
            values[slot] = value
        }
        let socket = values[0]
        switch subcommand {
        case "token":
            guard positionals.count == 1 else { return nil }
            var format = Token.Format.raw
            if let text = values[1] {
                guard let parsed = Token.Format(rawValue: text) else { return nil }
                format = parsed
            }
            var minValid: Int?
            if let text = values[2] {
                guard text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let parsed = Int(text) else {
                    return nil
                }
                minValid = parsed
            }
            // --curl-header with another --format is a usage error: the parser says so.
            guard !flagged || format == .raw else { return nil }
            self = .token(socket: socket, name: positionals[0], format: format, curlHeader: flagged, minValid: minValid)
        case "status":
            guard positionals.isEmpty else { return nil }
            self = .status(socket: socket, json: flagged)
        default:
            guard positionals.count == 1 else { return nil }
            self = .refresh(socket: socket, name: positionals[0])
        }
    }

    /// The command for this process's arguments, unless `TOKEND_CLI_FULL_PARSER` is set.
    static func fromCommandLine() -> QuickCommand? {
        if let off = getenv("TOKEND_CLI_FULL_PARSER"), off.pointee != 0 { return nil }
        return QuickCommand(Array(CommandLine.arguments.dropFirst()))
    }

    func run() throws {
        switch self {
        case .token(let socket, let name, let format, let curlHeader, let minValid):
            try Token.fetch(
                client: SocketOption.client(socket: socket),
                name: name,
                format: format,
                curlHeader: curlHeader,
                minValid: minValid
            )
        case .status(let socket, let json):
            try Status.show(client: SocketOption.client(socket: socket), json: json)
        case .refresh(let socket, let name):
            try Refresh.start(client: SocketOption.client(socket: socket), name: name)
        }
    }
}
