/// `[metrics]` in `tokend.toml`: where else than the socket's `GET /metrics` the metrics are exposed (SPEC §5).
///
/// Read at start only: a reload that changes the table logs that the change takes effect when tokend restarts.
public struct MetricsSettings: Sendable, Hashable {
    /// `listen`: a TCP address that serves `GET /metrics` only; nil: no listener.
    public var listen: MetricsListenAddress?
    /// `textfile`: a node_exporter textfile (`*.prom`), rewritten atomically every ``textfileInterval``; nil: none.
    public var textfile: String?
    /// `textfile_interval`, in seconds.
    public var textfileInterval: Double = 15

    public init() {}
}

/// An IP address literal and a port (`127.0.0.1:9464`, `[::1]:9464`): never a host name, which would be resolved
/// at start and bind wherever the resolver points.
public struct MetricsListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// The address as written, without the brackets of an IPv6 literal.
    public var host: String
    public var port: Int
    public var isIPv6: Bool
    /// 127.0.0.0/8, `::1`, or an IPv4-mapped 127.0.0.0/8 address.
    public var isLoopback: Bool

    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// What is wrong with a `listen` value.
    public struct Problem: Error, Sendable, Hashable {
        public var message: String
    }

    private static let expected = "expected an IP address and a port, such as \"127.0.0.1:9464\" or \"[::1]:9464\""

    /// Parses `host:port` (IPv4) or `[host]:port` (IPv6), the port 1 to 65535.
    public static func parse(_ text: String) -> Result<MetricsListenAddress, Problem> {
        let host: Substring
        let portText: Substring
        let isIPv6: Bool
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                return .failure(Problem(message: expected))
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
            isIPv6 = true
        } else {
            guard let colon = text.lastIndex(of: ":") else { return .failure(Problem(message: expected + ", found \"\(text)\"")) }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            isIPv6 = false
            if host.contains(":") {
                return .failure(Problem(message: "an IPv6 address is written in brackets, such as \"[::1]:9464\""))
            }
        }
        guard !portText.isEmpty, portText.allSatisfy(\.isASCIIDigit), portText.count <= 5, let port = Int(portText),
            (1...65535).contains(port)
        else { return .failure(Problem(message: "expected a port from 1 to 65535 after the address, found \"\(text)\"")) }
        if isIPv6 {
            guard let groups = parseIPv6(host) else {
                return .failure(Problem(message: "\"\(host)\" is not an IPv6 address literal"))
            }
            let loopback =
                groups == [0, 0, 0, 0, 0, 0, 0, 1] || (groups[0..<5].allSatisfy { $0 == 0 } && groups[5] == 0xFFFF && groups[6] >> 8 == 127)
            return .success(MetricsListenAddress(host: String(host), port: port, isIPv6: true, isLoopback: loopback))
        }
        guard let octets = parseIPv4(host) else {
            return .failure(Problem(message: "\"\(host)\" is not an IP address literal (host names are not resolved): " + expected))
        }
        return .success(MetricsListenAddress(host: String(host), port: port, isIPv6: false, isLoopback: octets[0] == 127))
    }

    /// Four decimal octets without leading zeros (which some parsers read as octal).
    static func parseIPv4<S: StringProtocol>(_ text: S) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var octets: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCIIDigit), part == "0" || !part.hasPrefix("0"),
                let value = UInt8(part)
            else { return nil }
            octets.append(value)
        }
        return octets
    }

    /// Eight 16-bit groups, with `::` for a run of zeros and a trailing dotted IPv4 allowed (RFC 4291 §2.2); no zone.
    static func parseIPv6<S: StringProtocol>(_ text: S) -> [UInt16]? {
        guard !text.isEmpty, text.utf8.count <= 45 else { return nil }
        let halves = text.split(separator: "::", omittingEmptySubsequences: false).map { String($0) }
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String, allowIPv4: Bool) -> [UInt16]? {
            guard !part.isEmpty else { return [] }
            var result: [UInt16] = []
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            for (index, piece) in pieces.enumerated() {
                if allowIPv4, index == pieces.count - 1, piece.contains(".") {
                    guard let octets = parseIPv4(piece) else { return nil }
                    result.append(UInt16(octets[0]) << 8 | UInt16(octets[1]))
                    result.append(UInt16(octets[2]) << 8 | UInt16(octets[3]))
                    continue
                }
                guard (1...4).contains(piece.count), let value = UInt16(piece, radix: 16) else { return nil }
                result.append(value)
            }
            return result
        }
        if halves.count == 1 {
            guard let all = groups(halves[0], allowIPv4: true), all.count == 8 else { return nil }
            return all
        }
        guard let head = groups(halves[0], allowIPv4: false), let tail = groups(halves[1], allowIPv4: true),
            head.count + tail.count <= 7
        else { return nil }
        return head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
