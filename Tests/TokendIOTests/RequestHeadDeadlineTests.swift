import NIOCore
import NIOEmbedded
import Testing
import TokendCore

@testable import TokendIO

/// Issue #18, finding 1: the deadline for a request head, on the embedded loop's clock (no sleeps).
@Suite(.timeLimit(.minutes(1))) struct RequestHeadDeadlineTests {
    /// A connection as the socket builds it: the guard (10 s idle timeout, 1 s head deadline) in front of the fast
    /// path.
    static func channel(_ fake: FastPathTests.FakeResponder = FastPathTests.FakeResponder()) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let loop = channel.embeddedEventLoop
        let connectionGuard = ConnectionGuardHandler(
            idleTimeout: .seconds(10),
            headTimeout: .seconds(1),
            maxPendingBytes: 1 << 20,
            now: { loop.now }
        )
        try channel.pipeline.syncOperations.addHandler(connectionGuard)
        try channel.pipeline.syncOperations.addHandler(
            FastPathHandler(responder: fake.responder, maxHeadBytes: 1024, connectionGuard: connectionGuard)
        )
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/x")).wait()
        return channel
    }

    @Test func aHeadStillUnfinishedAtItsDeadlineClosesTheConnection() throws {
        let channel = try Self.channel()
        for byte in "GET /v1/tokens/a HTTP/1.1\r\nX-Slow: ".utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(900))
        try channel.writeInbound(ByteBuffer(string: "a"))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        #expect(!channel.isActive)
    }

    @Test func completeRequestsLeaveNoDeadlineBehind() throws {
        let channel = try Self.channel()
        for _ in 0..<3 {
            try channel.writeInbound(ByteBuffer(string: "GET /v1/tokens/a HTTP/1.1\r\n\r\n"))
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(700))
        }
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        #expect(channel.isActive)
        #expect(FastPathTests.bodies(try FastPathTests.written(channel)).count == 3)
    }

    /// The same timer closes a connection that sends nothing for the idle timeout (10 s), counted from its last
    /// read, and leaves one alone while a request of it waits.
    @Test func nothingReadForTheIdleTimeoutClosesTheConnection() throws {
        let channel = try Self.channel()
        channel.embeddedEventLoop.advanceTime(by: .seconds(6))
        try channel.writeInbound(ByteBuffer(string: "GET /v1/tokens/a HTTP/1.1\r\n\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }

    @Test func aWaitingRequestKeepsAnIdleConnection() throws {
        let fake = FastPathTests.FakeResponder()
        fake.answerLater = ["/v1/tokens/slow"]
        let channel = try Self.channel(fake)
        try channel.writeInbound(ByteBuffer(string: "GET /v1/tokens/slow HTTP/1.1\r\n\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(25))
        #expect(channel.isActive)
        fake.answerDeferred()
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(!channel.isActive)
    }

    /// The deadline counts from the first byte of each head, not from the connection's first: a head that starts
    /// 0.9 s after the last one ended has its own second.
    @Test func eachHeadHasItsOwnDeadline() throws {
        let channel = try Self.channel()
        try channel.writeInbound(ByteBuffer(string: "GET /v1/tokens/a HTTP/1.1\r\n\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(900))
        try channel.writeInbound(ByteBuffer(string: "GET /v1/tok"))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(900))
        #expect(channel.isActive)
        try channel.writeInbound(ByteBuffer(string: "ens/b HTTP/1.1\r\n\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        #expect(channel.isActive)
        #expect(FastPathTests.bodies(try FastPathTests.written(channel)) == ["GET /v1/tokens/a", "GET /v1/tokens/b"])
    }

    /// After the hand-over to NIO's pipeline: a request whose body came in a later read is complete at its end, and
    /// the connection may then wait for its next request; a body that trickles is cut off like a head.
    @Test func aBodyCountsUntilItsRequestEnds() throws {
        let channel = try Self.channel()
        try channel.writeInbound(ByteBuffer(string: "POST /v1/tokens/a/invalidate HTTP/1.1\r\nContent-Length: 4\r\n\r\n"))
        try channel.writeInbound(ByteBuffer(string: "{}{}"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        #expect(channel.isActive)
        try channel.writeInbound(ByteBuffer(string: "POST /v1/tokens/a/invalidate HTTP/1.1\r\nContent-Length: 4\r\n\r\n"))
        try channel.writeInbound(ByteBuffer(string: "{"))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(600))
        try channel.writeInbound(ByteBuffer(string: "}"))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(400))
        #expect(!channel.isActive)
    }
}
