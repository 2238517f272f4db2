import NIOHTTP1
import Testing
import TokendCore

@testable import TokendIO

/// The fast path's recogniser: which bytes are a simple request, which are not, and which are only a prefix.
@Suite struct SimpleRequestHeadTests {
    static func parse(_ text: String, max: Int = 16 * 1024) -> SimpleRequestHead.Parse {
        SimpleRequestHead.parse(Array(text.utf8), maxHeadBytes: max)
    }

    @Test func curlsRequestIsSimple() {
        let text = "GET /v1/tokens/acme HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
        #expect(Self.parse(text) == .request(.init(target: "/v1/tokens/acme", accept: "*/*", keepAlive: true, length: text.utf8.count)))
    }

    @Test func theHeadEndsAtTheBlankLineAndLaterBytesAreLeft() {
        let first = "GET /v1/tokens/a?format=raw HTTP/1.1\r\nHost: x\r\n\r\n"
        #expect(
            Self.parse(first + "GET /v1/health HTTP/1.1\r\n")
                == .request(
                    .init(
                        target: "/v1/tokens/a?format=raw",
                        accept: nil,
                        keepAlive: true,
                        length: first.utf8.count
                    )
                )
        )
    }

    @Test func connectionCloseAndKeepAliveInAnyCase() {
        guard case .request(let close) = Self.parse("GET / HTTP/1.1\r\nCONNECTION:   Close\r\n\r\n") else {
            Issue.record("not simple")
            return
        }
        #expect(!close.keepAlive)
        guard case .request(let keep) = Self.parse("GET / HTTP/1.1\r\nconnection: keep-alive\r\n\r\n") else {
            Issue.record("not simple")
            return
        }
        #expect(keep.keepAlive)
    }

    @Test func theFirstAcceptCountsWithoutLeadingWhitespace() {
        guard case .request(let head) = Self.parse("GET / HTTP/1.1\r\naccept:\t text/plain; q=1\r\nAccept: a/b\r\n\r\n") else {
            Issue.record("not simple")
            return
        }
        #expect(head.accept == "text/plain; q=1")
    }

    @Test func everyProperPrefixIsIncomplete() {
        let text = "GET /v1/tokens/acme HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
        let bytes = Array(text.utf8)
        for end in 0..<bytes.count {
            #expect(SimpleRequestHead.parse(Array(bytes[..<end]), maxHeadBytes: 1024) == .incomplete, "prefix of \(end) bytes")
        }
    }

    @Test(arguments: [
        "POST /v1/tokens/a/invalidate HTTP/1.1\r\n\r\n",
        "HEAD / HTTP/1.1\r\n\r\n",
        "get / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET http://localhost/ HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        "GET /a#b HTTP/1.1\r\n\r\n",
        "GET /a\"b HTTP/1.1\r\n\r\n",
        "GET /a\u{7F} HTTP/1.1\r\n\r\n",
        "GET /ä HTTP/1.1\r\n\r\n",
        "GET /  HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\n\n",
        "GET / HTTP/1.1\r\nHost: x\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\n Host: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET / HTTP/1.1\r\n: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x \r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\t\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: ä\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\u{1}b\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "GET / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello",
        "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: close, keep-alive\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: close\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: TE\r\n\r\n",
        "\r\nGET / HTTP/1.1\r\n\r\n",
        "\u{16}\u{3}\u{1}\u{2}\u{0}",
    ])
    func notSimple(_ text: String) {
        #expect(Self.parse(text) == .notSimple)
    }

    @Test func tooManyHeaderLinesAreNotSimple() {
        let lines = (0..<SimpleRequestHead.maxHeaders).map { "X-\($0): y\r\n" }.joined()
        #expect(Self.parse("GET / HTTP/1.1\r\n" + lines + "\r\n") != .notSimple)
        #expect(Self.parse("GET / HTTP/1.1\r\n" + lines + "X-last: y\r\n\r\n") == .notSimple)
    }

    @Test func aHeadLongerThanTheLimitIsNotSimpleEvenWhenUnfinished() {
        let text = "GET /" + String(repeating: "a", count: 100) + " HTTP/1.1\r\n\r\n"
        #expect(Self.parse(text, max: text.utf8.count) != .notSimple)
        #expect(Self.parse(text, max: text.utf8.count - 1) == .notSimple)
        #expect(Self.parse(String(text.prefix(60)), max: 60) == .notSimple)
        #expect(Self.parse(String(text.prefix(60)), max: 61) == .incomplete)
    }

    @Test func bothWaysIntoTheSocketWriteTheSameHead() {
        var response = APIResponse(status: .serviceUnavailable, contentType: "application/json", body: Array("{}".utf8))
        response.headers = [.init("Retry-After", "7")]
        var bytes: [UInt8] = []
        ResponseWriter.bytes(of: response, close: true, into: &bytes)
        let expected =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            + "Content-Length: 2\r\nCache-Control: no-store\r\nRetry-After: 7\r\nConnection: close\r\n\r\n{}"
        #expect(String(decoding: bytes, as: UTF8.self) == expected)
        // NIO's pipeline gets the same fields in the same order.
        let head = ResponseWriter.head(of: response, close: true)
        #expect(head.status.code == 503)
        #expect(
            head.headers.map { "\($0.name): \($0.value)" } == [
                "Content-Type: application/json", "Content-Length: 2", "Cache-Control: no-store", "Retry-After: 7", "Connection: close",
            ]
        )
        bytes = []
        ResponseWriter.streamBytes(contentType: "text/event-stream", into: &bytes)
        #expect(
            String(decoding: bytes, as: UTF8.self) == "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                + "Cache-Control: no-store\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        #expect(ResponseWriter.streamHead(contentType: "text/event-stream").headers.map(\.name) == ["Content-Type", "Cache-Control"])
    }
}
