import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing
import TokendCore
import TokendTestSupport

@testable import TokendIO

/// The socket's fast path (decision 0006) against SwiftNIO's own HTTP/1 decoder, llhttp: whatever the fast path
/// takes for a simple request, llhttp parses the same way; and the handler answers in order, across waits, and
/// hands every other connection to NIO's pipeline with the bytes it has not answered.
@Suite(.timeLimit(.minutes(1))) struct FastPathTests {
    // MARK: - The recogniser against llhttp

    /// What llhttp makes of `bytes`: the complete requests and whether it failed.
    struct Decoded: Equatable {
        var heads: [HTTPRequestHead] = []
        var bodyBytes = 0
        var ends = 0
        var failed = false
    }

    static func llhttp(_ bytes: [UInt8]) -> Decoded {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
        var decoded = Decoded()
        do {
            try channel.writeInbound(ByteBuffer(bytes: bytes))
        } catch {
            decoded.failed = true
        }
        while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) {
            switch part {
            case .head(let head): decoded.heads.append(head)
            case .body(let body): decoded.bodyBytes += body.readableBytes
            case .end: decoded.ends += 1
            }
        }
        _ = try? channel.finish()
        return decoded
    }

    /// Requests near the simple shape: each line drawn from valid and invalid variants, then sometimes a byte
    /// changed, dropped or doubled.
    static func request(_ random: inout SeededGenerator) -> [UInt8] {
        let methods = ["GET", "GET", "GET", "GET", "GET", "GET", "POST", "HEAD", "get", "GET "]
        let targets = [
            "/v1/tokens/acme", "/v1/tokens/a-b_c.d~e", "/v1/tokens/x?format=raw&min_valid=60", "/", "/metrics",
            "/v1/tokens/%41%42", "/v1/tokens/a:b@c!$&'()*+,;=", "/a#frag", "http://h/x", "*", "/a b", "/a\tb",
        ]
        let versions = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2", "http/1.1", "HTTP/1.10"]
        let good = [
            "Host: localhost", "User-Agent: curl/8.5.0", "Accept: */*", "Accept: text/plain", "accept:text/plain",
            "ACCEPT:  \ttext/plain;q=0.9, */*", "Connection: close", "connection: Keep-Alive", "X-Empty:", "X-Tab: a\tb",
            "X-Q: \"quoted\"", "X-Long: " + String(repeating: "v", count: 300),
        ]
        let bad = [
            "Connection: Upgrade", "Connection: close, TE", "Content-Length: 0", "Content-Length: 3",
            "Transfer-Encoding: chunked", "X-Trailing: a ", " folded", "Bad Name: x", "X-Ünï: y", "Expect: 100-continue",
            "Upgrade: h2c", ": novalue",
        ]
        var text =
            methods.randomElement(using: &random)! + " " + targets.randomElement(using: &random)! + " "
            + versions.randomElement(using: &random)! + "\r\n"
        for _ in 0..<Int.random(in: 0...5, using: &random) {
            let pool = Int.random(in: 0..<10, using: &random) == 0 ? bad : good
            text += pool.randomElement(using: &random)! + "\r\n"
        }
        text += "\r\n"
        var bytes = Array(text.utf8)
        if Int.random(in: 0..<3, using: &random) == 0 {
            let at = Int.random(in: 0..<bytes.count, using: &random)
            switch Int.random(in: 0..<3, using: &random) {
            case 0: bytes[at] = [0, 9, 10, 13, 32, 58, 127, 200, UInt8(ascii: "G")].randomElement(using: &random)!
            case 1: bytes.remove(at: at)
            default: bytes.insert(bytes[at], at: at)
            }
        }
        return bytes
    }

    @Test func whateverTheFastPathAcceptsLlhttpParsesTheSameWay() {
        var random = SeededGenerator(seed: 0x6006)
        let next = Array("GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        var accepted = 0
        var refused = 0
        for round in 0..<20_000 {
            let bytes = Self.request(&random)
            switch SimpleRequestHead.parse(bytes, maxHeadBytes: 16 * 1024) {
            case .request(let head):
                accepted += 1
                // The same bytes, then another request (unless this one closes the connection, after which llhttp
                // refuses any byte): llhttp must see the same request end at the same byte.
                let decoded = Self.llhttp(Array(bytes[..<head.length]) + (head.keepAlive ? next : []))
                let expected = head.keepAlive ? 2 : 1
                #expect(!decoded.failed, "round \(round): llhttp refused \(String(decoding: bytes, as: UTF8.self).debugDescription)")
                guard decoded.heads.count == expected, decoded.ends == expected, decoded.bodyBytes == 0 else {
                    Issue.record("round \(round): llhttp saw \(decoded) in \(String(decoding: bytes, as: UTF8.self).debugDescription)")
                    continue
                }
                let first = decoded.heads[0]
                #expect(first.method == .GET && first.version == .http1_1, "round \(round)")
                #expect(first.uri == head.target, "round \(round)")
                #expect(first.headers.first(name: "accept") == head.accept, "round \(round)")
                #expect(first.isKeepAlive == head.keepAlive, "round \(round)")
                #expect(bytes[..<head.length].suffix(4).elementsEqual("\r\n\r\n".utf8), "round \(round)")
            case .incomplete:
                // A generated request always ends with its blank line; a prefix only when a mutation broke it.
                let decoded = Self.llhttp(bytes)
                #expect(decoded.ends == 0 || decoded.failed, "round \(round): llhttp completed what the fast path awaits")
            case .notSimple:
                refused += 1
            }
        }
        // The generator must exercise both sides, or the comparison says nothing.
        #expect(accepted > 2_000)
        #expect(refused > 3_000)
    }

    // MARK: - The handler

    /// A responder that answers `GET /v1/tokens/NAME` with the name, at once or when the test says.
    final class FakeResponder: @unchecked Sendable {
        var deferred: [(APIResponse) -> Void] = []
        var seen: [APIRequest] = []
        var answerLater: Set<String> = []

        var responder: UnixSocketServer.Responder {
            { request, respond, _ in
                self.seen.append(request)
                let response = APIResponse(
                    status: 200,
                    contentType: "text/plain; charset=utf-8",
                    body: Array("\(request.method) \(request.path)".utf8)
                )
                if self.answerLater.contains(request.path) {
                    self.deferred.append { respond($0) }
                } else {
                    respond(response)
                }
            }
        }

        func answerDeferred() {
            let waiting = deferred
            deferred = []
            for respond in waiting {
                respond(APIResponse(status: 200, contentType: "text/plain; charset=utf-8", body: Array("late".utf8)))
            }
        }
    }

    static func channel(_ fake: FakeResponder) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(FastPathHandler(responder: fake.responder, maxHeadBytes: 1024))
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/x")).wait()
        return channel
    }

    /// Every byte written to the client so far, whichever handler wrote it.
    static func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let data = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = data { text += String(buffer: buffer) }
        }
        return text
    }

    /// The bodies of the responses in `text`, in order (each response has a Content-Length).
    static func bodies(_ text: String) -> [String] {
        var rest = Substring(text)
        var bodies: [String] = []
        while let end = rest.range(of: "\r\n\r\n") {
            let head = rest[..<end.lowerBound]
            guard let line = head.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") }),
                let length = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces))
            else { break }
            let body = rest[end.upperBound...].prefix(length)
            bodies.append(String(body))
            rest = rest[end.upperBound...].dropFirst(length)
        }
        return bodies
    }

    /// Immediate answers (the daemon's `answerNow`) never reach the responder, and the same body again is written
    /// whole again; a new body, even of the same length, is written as itself. (Whether the bytes are reused is a
    /// matter of speed, measured by `scripts/bench serving`, not asserted here.)
    @Test func immediateAnswersSkipTheResponder() throws {
        let fake = FakeResponder()
        final class Shared: @unchecked Sendable { var body = Array("token-one".utf8) }  // one thread: EmbeddedChannel
        let shared = Shared()
        let immediate: UnixSocketServer.ImmediateResponder = { request in
            guard request.path == "/v1/tokens/a" else { return nil }
            return APIResponse(status: 200, contentType: "text/plain; charset=utf-8", body: shared.body)
        }
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(FastPathHandler(immediate: immediate, responder: fake.responder, maxHeadBytes: 1024))
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/x")).wait()
        func get(_ path: String, close: Bool = false) throws -> [ByteBuffer] {
            try channel.writeInbound(ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: x\r\n\(close ? "Connection: close\r\n" : "")\r\n"))
            var buffers: [ByteBuffer] = []
            while let data = try channel.readOutbound(as: IOData.self) {
                if case .byteBuffer(let buffer) = data { buffers.append(buffer) }
            }
            return buffers
        }
        let first = try #require(try get("/v1/tokens/a").first)
        let second = try #require(try get("/v1/tokens/a").first)
        #expect(Self.bodies(String(buffer: first)) == ["token-one"])
        #expect(Self.bodies(String(buffer: second)) == ["token-one"])
        #expect(fake.seen.isEmpty)
        let other = try get("/v1/tokens/b")
        #expect(Self.bodies(other.map { String(buffer: $0) }.joined()) == ["GET /v1/tokens/b"])
        #expect(fake.seen.map(\.path) == ["/v1/tokens/b"])
        #expect(Self.bodies(String(buffer: try #require(try get("/v1/tokens/a").first))) == ["token-one"])
        shared.body = Array("token-two".utf8)
        let third = try #require(try get("/v1/tokens/a").first)
        #expect(Self.bodies(String(buffer: third)) == ["token-two"])
        let closing = try #require(try get("/v1/tokens/a", close: true).first)
        #expect(String(buffer: closing).contains("Connection: close\r\n"))
        #expect(Self.bodies(String(buffer: closing)) == ["token-two"])
    }

    @Test func pipelinedRequestsAreAnsweredInOrderInOneFlush() throws {
        let fake = FakeResponder()
        let channel = try Self.channel(fake)
        let requests = ["/v1/tokens/a", "/v1/tokens/b", "/v1/health"].map { "GET \($0) HTTP/1.1\r\nHost: x\r\n\r\n" }.joined()
        try channel.writeInbound(ByteBuffer(string: requests))
        let text = try Self.written(channel)
        #expect(Self.bodies(text) == ["GET /v1/tokens/a", "GET /v1/tokens/b", "GET /v1/health"])
        #expect(
            text.hasPrefix(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\nCache-Control: no-store\r\n\r\n"
            )
        )
        #expect(channel.isActive)
    }

    @Test func aRequestArrivingByteByByteIsAnsweredOnce() throws {
        let fake = FakeResponder()
        let channel = try Self.channel(fake)
        for byte in "GET /v1/tokens/a?format=raw HTTP/1.1\r\nAccept: text/plain\r\n\r\n".utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        #expect(Self.bodies(try Self.written(channel)) == ["GET /v1/tokens/a"])
        #expect(fake.seen.count == 1)
        #expect(fake.seen.first?.query == ["format": "raw"])
        #expect(fake.seen.first?.accept == "text/plain")
    }

    @Test func readsThatEndInsideARequestDoNotGrowTheBuffer() throws {
        let fake = FakeResponder()
        let handler = FastPathHandler(responder: fake.responder, maxHeadBytes: 1024)
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/x")).wait()
        let request = Array("GET /v1/tokens/a HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        // Each read carries the end of one request and the start of the next.
        var stream: [UInt8] = []
        for _ in 0..<500 { stream += request }
        var largest = 0
        try channel.writeInbound(ByteBuffer(bytes: stream[0..<10]))
        var offset = 10
        while offset < stream.count {
            let end = min(stream.count, offset + request.count)
            try channel.writeInbound(ByteBuffer(bytes: stream[offset..<end]))
            largest = max(largest, handler.bufferedStorage)
            offset = end
        }
        #expect(Self.bodies(try Self.written(channel)).count == 500)
        #expect(fake.seen.count == 500)
        #expect(largest <= 2 * request.count, "the buffer held \(largest) bytes")
    }

    @Test func requestsBehindAWaitingOneWaitForItsAnswer() throws {
        let fake = FakeResponder()
        fake.answerLater = ["/v1/tokens/slow"]
        let channel = try Self.channel(fake)
        try channel.writeInbound(ByteBuffer(string: "GET /v1/tokens/slow HTTP/1.1\r\n\r\nGET /v1/tokens/b HTTP/1.1\r\n\r\n"))
        #expect(try Self.written(channel).isEmpty)
        #expect(fake.seen.map(\.path) == ["/v1/tokens/slow"])
        fake.answerDeferred()
        #expect(Self.bodies(try Self.written(channel)) == ["late", "GET /v1/tokens/b"])
    }

    @Test func aClientPipeliningTooMuchBehindAWaitingRequestIsClosed() throws {
        let fake = FakeResponder()
        fake.answerLater = ["/v1/tokens/slow"]
        let channel = try Self.channel(fake)
        try channel.writeInbound(ByteBuffer(string: "GET /v1/tokens/slow HTTP/1.1\r\n\r\n"))
        let filler = String(repeating: "GET /v1/tokens/b HTTP/1.1\r\n\r\n", count: 1_000)
        try channel.writeInbound(ByteBuffer(string: filler))
        #expect(channel.isActive, "\(filler.utf8.count) bytes are within the limit")
        try channel.writeInbound(ByteBuffer(string: filler + filler))
        #expect(!channel.isActive)
        fake.answerDeferred()
        #expect(try Self.written(channel).isEmpty)
        #expect(fake.seen.count == 1)
    }

    /// Issue #18, finding 2: while the client does not read its answers (the channel is not writable) the fast path
    /// answers nothing more; once it reads, the requests it already has are answered in order.
    @Test func noAnswersWhileTheClientDoesNotReadThem() throws {
        let fake = FakeResponder()
        let channel = try Self.channel(fake)
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        try channel.writeInbound(ByteBuffer(string: "GET /v1/tokens/a HTTP/1.1\r\n\r\nGET /v1/tokens/b HTTP/1.1\r\n\r\n"))
        #expect(try Self.written(channel).isEmpty)
        #expect(fake.seen.isEmpty)
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(Self.bodies(try Self.written(channel)) == ["GET /v1/tokens/a", "GET /v1/tokens/b"])
    }

    @Test func connectionCloseIsAnsweredThenClosedAndLaterBytesDropped() throws {
        let fake = FakeResponder()
        let channel = try Self.channel(fake)
        try channel.writeInbound(
            ByteBuffer(string: "GET /v1/tokens/a HTTP/1.1\r\nConnection: close\r\n\r\nGET /v1/tokens/b HTTP/1.1\r\n\r\n")
        )
        let text = try Self.written(channel)
        #expect(Self.bodies(text) == ["GET /v1/tokens/a"])
        #expect(text.contains("\r\nConnection: close\r\n"))
        #expect(!channel.isActive)
        #expect(fake.seen.count == 1)
    }

    @Test func theFirstOtherRequestHandsTheRestOfTheConnectionToNIO() throws {
        let fake = FakeResponder()
        let channel = try Self.channel(fake)
        let bytes =
            "GET /v1/tokens/a HTTP/1.1\r\n\r\n"
            + "POST /v1/tokens/a/invalidate HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
            + "GET /v1/tokens/c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            + "GET /v1/tokens/d HTTP/1.1\r\n\r\n"
        try channel.writeInbound(ByteBuffer(string: bytes))
        let text = try Self.written(channel)
        #expect(Self.bodies(text) == ["GET /v1/tokens/a", "POST /v1/tokens/a/invalidate", "GET /v1/tokens/c", "GET /v1/tokens/d"])
        #expect(fake.seen[1].body == Array("{}".utf8))
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: FastPathHandler.self) }
    }

    @Test func garbageGoesToNIOWhichRefusesIt() throws {
        let fake = FakeResponder()
        let channel = try Self.channel(fake)
        _ = try? channel.writeInbound(ByteBuffer(string: "\u{16}\u{3}\u{1} not http\r\n\r\n"))
        let text = try Self.written(channel)
        #expect(text.hasPrefix("HTTP/1.1 400 Bad Request"))
        #expect(fake.seen.isEmpty)
    }

    @Test func anEventStreamIsChunked() throws {
        let channel = EmbeddedChannel()
        final class Box: @unchecked Sendable { var stream: EventStream? }
        let box = Box()
        let responder: UnixSocketServer.Responder = { _, _, openStream in box.stream = openStream("text/event-stream") }
        try channel.pipeline.syncOperations.addHandler(FastPathHandler(responder: responder, maxHeadBytes: 1024))
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/x")).wait()
        try channel.writeInbound(ByteBuffer(string: "GET /v1/tokens/a/watch HTTP/1.1\r\n\r\n"))
        box.stream?.send(Array("event: token\n\n".utf8))
        box.stream?.finish()
        channel.embeddedEventLoop.run()
        #expect(
            try Self.written(channel) == "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
                + "Transfer-Encoding: chunked\r\n\r\ne\r\nevent: token\n\n\r\n0\r\n\r\n"
        )
    }
}
