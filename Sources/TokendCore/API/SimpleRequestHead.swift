/// The request nearly every caller sends, `GET /v1/tokens/NAME HTTP/1.1` with a few plain headers and no body,
/// recognised from its bytes: the socket's fast path (decision 0006).
///
/// This is not an HTTP parser. It recognises a strict subset of RFC 9112 and says `.notSimple` for everything
/// else, and the socket then hands the connection, with every byte it has not answered, to SwiftNIO's HTTP/1
/// decoder (llhttp), which decides what the bytes mean and how to refuse them. Whatever this accepts, llhttp
/// parses the same way (`SimpleRequestHeadTests` checks that over seeded and mutated requests).
///
/// Accepted: the request line `GET` SP origin-form SP `HTTP/1.1` CRLF, where the target is `/` followed by
/// RFC 3986 path and query characters; then header lines `name: value` CRLF, the name made of RFC 9110 token
/// characters, the value of visible ASCII with single spaces or tabs inside it; then CRLF. Not simple, among
/// others: any other method or version, a bare LF, obs-fold, bytes ≥ 0x80 or control bytes, a value with trailing
/// whitespace, `Content-Length`, `Transfer-Encoding`, `Upgrade`, `Expect`, a `Connection` that is not exactly
/// `close` or `keep-alive` (or appears twice), more than `maxHeaders` lines, or a head longer than `maxHeadBytes`.
public struct SimpleRequestHead: Sendable, Hashable {
    /// The request target as sent (`/v1/tokens/acme?format=raw`).
    public var target: String
    /// The first `Accept` header's value.
    public var accept: String?
    public var keepAlive: Bool
    /// Bytes from the request line through the blank line.
    public var length: Int

    public init(target: String, accept: String?, keepAlive: Bool, length: Int) {
        self.target = target
        self.accept = accept
        self.keepAlive = keepAlive
        self.length = length
    }

    public enum Parse: Sendable, Hashable {
        case request(SimpleRequestHead)
        /// A prefix of a simple request: wait for more bytes.
        case incomplete
        /// Not the simple shape (or not HTTP at all): llhttp decides.
        case notSimple
    }

    public static let maxHeaders = 64

    /// Recognises the head at the start of `bytes`.
    public static func parse(_ bytes: UnsafeRawBufferPointer, maxHeadBytes: Int) -> Parse {
        var scanner = Scanner(bytes: bytes, limit: min(bytes.count, maxHeadBytes))
        let result = scanner.head()
        if result == .incomplete, bytes.count >= maxHeadBytes { return .notSimple }
        return result
    }

    public static func parse(_ bytes: [UInt8], maxHeadBytes: Int) -> Parse {
        bytes.withUnsafeBytes { parse($0, maxHeadBytes: maxHeadBytes) }
    }

    private struct Scanner {
        let bytes: UnsafeRawBufferPointer
        let limit: Int
        var index = 0

        init(bytes: UnsafeRawBufferPointer, limit: Int) {
            self.bytes = bytes
            self.limit = limit
        }

        /// `.incomplete` when the bytes ran out while everything so far fitted the shape.
        mutating func head() -> Parse {
            // Request line.
            for byte in "GET /".utf8 {
                guard index < limit else { return .incomplete }
                guard bytes[index] == byte else { return .notSimple }
                index += 1
            }
            let targetStart = index - 1
            while true {
                guard index < limit else { return .incomplete }
                let byte = bytes[index]
                if byte == UInt8(ascii: " ") { break }
                guard Self.isTargetByte(byte) else { return .notSimple }
                index += 1
            }
            let targetEnd = index
            for byte in " HTTP/1.1\r\n".utf8 {
                guard index < limit else { return .incomplete }
                guard bytes[index] == byte else { return .notSimple }
                index += 1
            }
            // Header lines.
            var accept: String?
            var connection: Bool?
            var lines = 0
            while true {
                guard index < limit else { return .incomplete }
                if bytes[index] == UInt8(ascii: "\r") {
                    guard index + 1 < limit else { return .incomplete }
                    guard bytes[index + 1] == UInt8(ascii: "\n") else { return .notSimple }
                    index += 2
                    break
                }
                lines += 1
                guard lines <= SimpleRequestHead.maxHeaders else { return .notSimple }
                let nameStart = index
                while true {
                    guard index < limit else { return .incomplete }
                    let byte = bytes[index]
                    if byte == UInt8(ascii: ":") { break }
                    guard Self.isTokenByte(byte) else { return .notSimple }
                    index += 1
                }
                let nameEnd = index
                guard nameEnd > nameStart else { return .notSimple }
                index += 1
                while index < limit, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t") {
                    index += 1
                }
                let valueStart = index
                while true {
                    guard index < limit else { return .incomplete }
                    let byte = bytes[index]
                    if byte == UInt8(ascii: "\r") { break }
                    guard (0x21...0x7E).contains(byte) || byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") else {
                        return .notSimple
                    }
                    index += 1
                }
                let valueEnd = index
                guard index + 1 < limit else { return .incomplete }
                guard bytes[index + 1] == UInt8(ascii: "\n") else { return .notSimple }
                index += 2
                if valueEnd > valueStart, bytes[valueEnd - 1] == UInt8(ascii: " ") || bytes[valueEnd - 1] == UInt8(ascii: "\t") {
                    return .notSimple
                }
                switch Self.field(nameStart..<nameEnd, in: bytes) {
                case .accept:
                    if accept == nil { accept = Self.string(valueStart..<valueEnd, in: bytes) }
                case .connection:
                    guard connection == nil else { return .notSimple }
                    if Self.equalsLowercased(valueStart..<valueEnd, "close", in: bytes) {
                        connection = false
                    } else if Self.equalsLowercased(valueStart..<valueEnd, "keep-alive", in: bytes) {
                        connection = true
                    } else {
                        return .notSimple
                    }
                case .refused:
                    return .notSimple
                case .other:
                    break
                }
            }
            let target = Self.string(targetStart..<targetEnd, in: bytes)
            return .request(SimpleRequestHead(target: target, accept: accept, keepAlive: connection ?? true, length: index))
        }

        private enum Field { case accept, connection, refused, other }

        private static func field(_ range: Range<Int>, in bytes: UnsafeRawBufferPointer) -> Field {
            switch range.count {
            case 6 where equalsLowercased(range, "accept", in: bytes): return .accept
            case 6 where equalsLowercased(range, "expect", in: bytes): return .refused
            case 7 where equalsLowercased(range, "upgrade", in: bytes): return .refused
            case 10 where equalsLowercased(range, "connection", in: bytes): return .connection
            case 14 where equalsLowercased(range, "content-length", in: bytes): return .refused
            case 17 where equalsLowercased(range, "transfer-encoding", in: bytes): return .refused
            default: return .other
            }
        }

        /// Whether the bytes, with ASCII letters lowercased, are `lowercase`.
        private static func equalsLowercased(_ range: Range<Int>, _ lowercase: StaticString, in bytes: UnsafeRawBufferPointer) -> Bool {
            guard range.count == lowercase.utf8CodeUnitCount else { return false }
            return lowercase.withUTF8Buffer { expected in
                for offset in 0..<range.count {
                    var byte = bytes[range.lowerBound + offset]
                    if byte >= UInt8(ascii: "A"), byte <= UInt8(ascii: "Z") { byte |= 0x20 }
                    if byte != expected[offset] { return false }
                }
                return true
            }
        }

        private static func string(_ range: Range<Int>, in bytes: UnsafeRawBufferPointer) -> String {
            String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
        }

        /// RFC 3986 `pchar`, `/` and `?` (unreserved, sub-delims, `:`, `@`, `%`): no `#`, quotes, brackets, spaces.
        static func isTargetByte(_ byte: UInt8) -> Bool {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return true
            case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "!"),
                UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"),
                UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="),
                UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "%"), UInt8(ascii: "/"), UInt8(ascii: "?"):
                return true
            default:
                return false
            }
        }

        /// RFC 9110 `tchar`.
        static func isTokenByte(_ byte: UInt8) -> Bool {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return true
            case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
                UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
                return true
            default:
                return false
            }
        }
    }
}

/// The bytes of a socket API answer on the fast path, as SwiftNIO's `HTTPResponseEncoder` would write the same
/// head (the header names and order of `APIChannelHandler.write`).
public enum SimpleResponseHead {
    /// `HTTP/1.1 <status> <reason>` and the headers, through the blank line.
    ///
    /// Without `contentLength` the body is chunked (an event stream).
    public static func bytes(
        status: Int,
        reason: String,
        contentType: String,
        contentLength: Int?,
        headers: [TokenRequest.Header],
        close: Bool,
        into output: inout [UInt8]
    ) {
        output.append(contentsOf: "HTTP/1.1 ".utf8)
        output.append(contentsOf: String(status).utf8)
        output.append(UInt8(ascii: " "))
        output.append(contentsOf: reason.utf8)
        output.append(contentsOf: "\r\nContent-Type: ".utf8)
        output.append(contentsOf: contentType.utf8)
        if let contentLength {
            output.append(contentsOf: "\r\nContent-Length: ".utf8)
            output.append(contentsOf: String(contentLength).utf8)
        }
        output.append(contentsOf: "\r\nCache-Control: no-store\r\n".utf8)
        for header in headers {
            output.append(contentsOf: header.name.utf8)
            output.append(contentsOf: ": ".utf8)
            output.append(contentsOf: header.value.utf8)
            output.append(contentsOf: "\r\n".utf8)
        }
        if close { output.append(contentsOf: "Connection: close\r\n".utf8) }
        if contentLength == nil { output.append(contentsOf: "Transfer-Encoding: chunked\r\n".utf8) }
        output.append(contentsOf: "\r\n".utf8)
    }
}
