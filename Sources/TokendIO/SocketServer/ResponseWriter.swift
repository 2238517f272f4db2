import NIOCore
import NIOHTTP1
import TokendCore

/// The one place a socket API answer becomes a response on the wire, for both ways into the socket: the fast path
/// writes ``bytes(of:close:into:)``, SwiftNIO's HTTP/1 pipeline writes ``head(of:close:)``; both take their header
/// fields, in the same order, from ``fields(contentType:contentLength:headers:close:)``.
enum ResponseWriter {
    /// The header fields of an answer: `Content-Type`, `Content-Length` (none for an event stream), `Cache-Control:
    /// no-store`, the answer's own headers (`Retry-After`), and `Connection: close` when the connection ends after it.
    static func fields(contentType: String, contentLength: Int?, headers: [TokenRequest.Header], close: Bool) -> [(String, String)] {
        var fields: [(String, String)] = [("Content-Type", contentType)]
        if let contentLength { fields.append(("Content-Length", String(contentLength))) }
        fields.append(("Cache-Control", "no-store"))
        for header in headers { fields.append((header.name, header.value)) }
        if close { fields.append(("Connection", "close")) }
        return fields
    }

    /// The whole answer as bytes (status line, header fields, blank line, body), for the fast path.
    static func bytes(of response: APIResponse, close: Bool, into output: inout [UInt8]) {
        let fields = fields(
            contentType: response.contentType,
            contentLength: response.body.count,
            headers: response.headers,
            close: close
        )
        head(status: response.status, fields: fields, chunked: false, into: &output)
        output.append(contentsOf: response.body)
    }

    /// The head of an event stream (chunked, no length), for the fast path.
    static func streamBytes(contentType: String, into output: inout [UInt8]) {
        head(
            status: .ok,
            fields: fields(contentType: contentType, contentLength: nil, headers: [], close: false),
            chunked: true,
            into: &output
        )
    }

    /// The head of an answer for SwiftNIO's `HTTPResponseEncoder`, which adds `Transfer-Encoding: chunked` itself to a
    /// head without a length.
    static func head(of response: APIResponse, close: Bool) -> HTTPResponseHead {
        head(
            status: response.status,
            fields: fields(contentType: response.contentType, contentLength: response.body.count, headers: response.headers, close: close)
        )
    }

    /// The head of an event stream for SwiftNIO's pipeline.
    static func streamHead(contentType: String) -> HTTPResponseHead {
        head(status: .ok, fields: fields(contentType: contentType, contentLength: nil, headers: [], close: false))
    }

    private static func head(status: APIStatus, fields: [(String, String)]) -> HTTPResponseHead {
        var headers = HTTPHeaders()
        headers.reserveCapacity(fields.count)
        for (name, value) in fields { headers.add(name: name, value: value) }
        return HTTPResponseHead(
            version: .http1_1,
            status: HTTPResponseStatus(statusCode: status.code, reasonPhrase: status.reason),
            headers: headers
        )
    }

    private static func head(status: APIStatus, fields: [(String, String)], chunked: Bool, into output: inout [UInt8]) {
        output.append(contentsOf: "HTTP/1.1 ".utf8)
        output.append(contentsOf: String(status.code).utf8)
        output.append(UInt8(ascii: " "))
        output.append(contentsOf: status.reason.utf8)
        output.append(contentsOf: "\r\n".utf8)
        for (name, value) in fields {
            output.append(contentsOf: name.utf8)
            output.append(contentsOf: ": ".utf8)
            output.append(contentsOf: value.utf8)
            output.append(contentsOf: "\r\n".utf8)
        }
        if chunked { output.append(contentsOf: "Transfer-Encoding: chunked\r\n".utf8) }
        output.append(contentsOf: "\r\n".utf8)
    }
}
