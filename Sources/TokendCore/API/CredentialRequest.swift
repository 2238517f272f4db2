/// What systemd asks for when a unit with `LoadCredential=ID:/run/tokend/credentials.sock` starts (SPEC §10): it
/// connects from the abstract address `\0<random hex>/unit/<unit>/<ID>`, and that address is all it says.
public struct CredentialRequest: Sendable, Hashable {
    /// The unit being started, such as `backup.service`.
    public var unit: String
    /// The credential's id, the `ID` of `LoadCredential=ID:…`.
    public var id: String

    public init(unit: String, id: String) {
        self.unit = unit
        self.id = id
    }

    /// The request named by a peer's address: `sun_path`'s bytes as `getpeername` gave them (a leading NUL for an
    /// abstract address); nil for any address not of systemd's shape (a path, an unnamed socket, other text).
    ///
    /// Trailing NULs are dropped: an address read into a zeroed `sockaddr_un` without its length ends in them, and
    /// systemd's names hold none (unit names and credential ids cannot contain NUL).
    public static func parse(address: some Collection<UInt8>) -> CredentialRequest? {
        var bytes = Array(address)
        guard bytes.first == 0 else { return nil }
        bytes.removeFirst()
        while bytes.last == 0 { bytes.removeLast() }
        guard !bytes.contains(0), let text = String(validating: bytes, as: UTF8.self) else { return nil }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[1] == "unit", !parts[0].isEmpty, parts[0].utf8.allSatisfy(\.isHexDigitByte) else { return nil }
        let unit = String(parts[2])
        let id = String(parts[3])
        guard isPlausibleUnitName(unit), isValidCredentialID(id) else { return nil }
        return CredentialRequest(unit: unit, id: id)
    }

    /// A unit name as systemd writes it: `name.type`, printable ASCII without `/` or spaces.
    static func isPlausibleUnitName(_ name: String) -> Bool {
        guard name.utf8.count <= 256, let dot = name.lastIndex(of: "."), dot != name.startIndex,
            name.index(after: dot) != name.endIndex
        else { return false }
        return name.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") }
    }

    /// A credential id systemd accepts (`credential_name_valid`: a file name), kept to printable ASCII.
    public static func isValidCredentialID(_ id: String) -> Bool {
        guard !id.isEmpty, id.utf8.count <= 255, id != ".", id != ".." else { return false }
        return id.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") }
    }
}

extension UInt8 {
    fileprivate var isHexDigitByte: Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(self)
            || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(self)
    }
}

/// `[access] units = ["backup.service", "report-*.service"]`: shell-style globs over unit names, as `fnmatch(3)`
/// without flags reads them (`*`, `?`, `[a-z]`, `[!x]`, `\` quoting the next character).
public enum UnitPattern {
    /// Whether `pattern` matches all of `name`.
    public static func matches(_ pattern: String, _ name: String) -> Bool {
        match(Array(pattern.utf8)[...], Array(name.utf8)[...])
    }

    /// A pattern `[access] units` accepts: a unit name or glob without `/`, spaces or control characters, and with
    /// every `[` closed.
    public static func isValid(_ pattern: String) -> Bool {
        guard !pattern.isEmpty, pattern.utf8.count <= 256,
            pattern.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") })
        else { return false }
        let bytes = Array(pattern.utf8)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "\\") {
                index += 2
                continue
            }
            if bytes[index] == UInt8(ascii: "["), bracket(bytes[...], from: index) == nil { return false }
            index += 1
        }
        return true
    }

    private static func match(_ pattern: ArraySlice<UInt8>, _ name: ArraySlice<UInt8>) -> Bool {
        var pattern = pattern
        var name = name
        while let first = pattern.first {
            switch first {
            case UInt8(ascii: "*"):
                pattern = pattern.dropFirst()
                while pattern.first == UInt8(ascii: "*") { pattern = pattern.dropFirst() }
                if pattern.isEmpty { return true }
                var rest = name
                while true {
                    if match(pattern, rest) { return true }
                    guard !rest.isEmpty else { return false }
                    rest = rest.dropFirst()
                }
            case UInt8(ascii: "?"):
                guard !name.isEmpty else { return false }
                pattern = pattern.dropFirst()
                name = name.dropFirst()
            case UInt8(ascii: "["):
                guard let character = name.first else { return false }
                if let (set, end) = bracket(pattern, from: pattern.startIndex) {
                    guard set(character) else { return false }
                    pattern = pattern[end...]
                } else {
                    // An unclosed `[` stands for itself, as in fnmatch.
                    guard character == first else { return false }
                    pattern = pattern.dropFirst()
                }
                name = name.dropFirst()
            case UInt8(ascii: "\\") where pattern.count > 1:
                let literal = pattern[pattern.index(after: pattern.startIndex)]
                guard name.first == literal else { return false }
                pattern = pattern.dropFirst(2)
                name = name.dropFirst()
            default:
                guard name.first == first else { return false }
                pattern = pattern.dropFirst()
                name = name.dropFirst()
            }
        }
        return name.isEmpty
    }

    /// The bracket expression opening at `start`: what it matches and the index after its `]`; nil when unclosed.
    private static func bracket(_ pattern: ArraySlice<UInt8>, from start: Int) -> ((UInt8) -> Bool, Int)? {
        var index = start + 1
        var negated = false
        if index < pattern.endIndex, pattern[index] == UInt8(ascii: "!") || pattern[index] == UInt8(ascii: "^") {
            negated = true
            index += 1
        }
        var ranges: [ClosedRange<UInt8>] = []
        var first = true
        while index < pattern.endIndex {
            let character = pattern[index]
            if character == UInt8(ascii: "]"), !first {
                let matched = ranges
                return ({ byte in matched.contains { $0.contains(byte) } != negated }, index + 1)
            }
            first = false
            if index + 2 < pattern.endIndex, pattern[index + 1] == UInt8(ascii: "-"), pattern[index + 2] != UInt8(ascii: "]") {
                let upper = pattern[index + 2]
                if character <= upper { ranges.append(character...upper) }
                index += 3
            } else {
                ranges.append(character...character)
                index += 1
            }
        }
        return nil
    }
}

/// The answer to a ``CredentialRequest``: the raw token of the instance the id names, or nothing and why.
public enum CredentialDecision: Sendable, Hashable {
    /// Write `token` (the instance's raw access token) and close.
    case serve(instance: String, token: Secret)
    /// Close without data; `reason` is for the log (never the token).
    case refuse(instance: String?, reason: String)

    /// Decides `request` for the instance its id names (`instance`, nil when none), whose `[access] units` are
    /// `units`, and whose servable token is `token` (nil when it has none); `noTokenReason` says why not.
    public static func decide(
        _ request: CredentialRequest,
        instance: String?,
        units: [String],
        token: Secret?,
        noTokenReason: String = "no valid token"
    ) -> CredentialDecision {
        guard let instance else { return .refuse(instance: nil, reason: "no instance has credential id '\(request.id)'") }
        guard !units.isEmpty else { return .refuse(instance: instance, reason: "the instance's [access] names no units") }
        guard units.contains(where: { UnitPattern.matches($0, request.unit) }) else {
            return .refuse(instance: instance, reason: "unit '\(request.unit)' is not in the instance's [access] units")
        }
        guard let token, !token.revealed.isEmpty else { return .refuse(instance: instance, reason: noTokenReason) }
        return .serve(instance: instance, token: token)
    }
}
