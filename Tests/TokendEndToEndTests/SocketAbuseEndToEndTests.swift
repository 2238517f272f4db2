import Dispatch
import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

extension SocketLoadEndToEndTests {
    /// Runs `work` on `count` Dispatch worker threads (blocking socket calls must not tie up the cooperative pool
    /// that the well-behaved clients run on) and waits for all of them.
    static func onThreads(_ count: Int, _ work: @escaping @Sendable (Int) -> Void) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let group = DispatchGroup()
            for index in 0..<count {
                DispatchQueue.global().async(group: group) { work(index) }
            }
            group.notify(queue: .global()) { done.resume() }
        }
    }

    /// Writes without SIGPIPE (the daemon may have closed the connection already).
    static func transmit(_ fd: Int32, _ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Issue #9: while 16 clients read tokens continuously, others send garbage, oversized headers and bodies,
    /// requests that trickle in a byte at a time, and thousands of connects; the good clients never see an error.
    ///
    /// Every client here is the test's own uid: the per-uid cap (issue #18) is lifted, so that this test keeps
    /// showing that abuse of other kinds does not reach the good clients (`SocketHardeningEndToEndTests` shows the
    /// cap across uids).
    @Test func sixteenGoodClientsUnharmedByConcurrentAbuse() async throws {
        let settings = "max_connections_per_uid = 1000\n" + DaemonHarness.fastSettings
        try await DaemonHarness.withRunning("alpha", "beta", settings: settings) { harness in
            let expected = [
                "alpha": try #require(try await harness.token("alpha")),
                "beta": try #require(try await harness.token("beta")),
            ]
            let good = harness.readContinuously(["alpha", "beta"], expected: expected, clients: 16)
            let path = harness.socketPath
            let started = Stopwatch()
            async let garbage: Void = Self.onThreads(4) { thread in
                var random = SeededGenerator(seed: UInt64(thread + 1))
                for _ in 0..<50 {
                    guard let fd = connectUnixSocket(path) else { continue }
                    Self.transmit(fd, (0..<2048).map { _ in UInt8.random(in: 0...255, using: &random) })
                    close(fd)
                }
            }
            async let oversized: Void = Self.onThreads(4) { _ in
                for round in 0..<10 {
                    guard let fd = connectUnixSocket(path) else { continue }
                    let request =
                        round % 2 == 0
                        ? "GET /v1/tokens/alpha HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "h", count: 64 * 1024) + "\r\n\r\n"
                        : "POST /v1/tokens/alpha/invalidate HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"
                            + String(repeating: "b", count: 200_000)
                    var timeout = timeval(tv_sec: 2, tv_usec: 0)
                    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                    Self.transmit(fd, Array(request.utf8))
                    close(fd)
                }
            }
            async let slow: Void = Self.onThreads(4) { _ in
                // 25 connections per thread, each trickling a request one byte every 100 ms for 3 s.
                let fds = (0..<25).compactMap { _ in connectUnixSocket(path) }
                let request = Array("GET /v1/tokens/alpha HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n".utf8)
                for byte in 0..<30 {
                    for fd in fds { Self.transmit(fd, [request[byte % request.count]]) }
                    usleep(100_000)
                }
                for fd in fds { close(fd) }
            }
            async let floods: Void = Self.onThreads(4) { _ in
                for _ in 0..<750 {
                    if let fd = connectUnixSocket(path) { close(fd) }
                }
            }
            _ = await (garbage, oversized, slow, floods)
            let abuseTook = started.elapsed
            let (served, errors) = await DaemonHarness.finish(good)
            #expect(errors.isEmpty, "\(errors.count) errors for good clients, first: \(errors.prefix(3))")
            #expect(served >= 16, "good clients were served only \(served) times in \(abuseTook) s")
            #expect(harness.process?.isRunning == true)
            #expect(try await harness.token("alpha") == expected["alpha"])
            #expect(try await harness.stop() == 0)
            print("socket abuse: \(served) good reads, 0 errors, in \(String(format: "%.1f", abuseTook)) s of abuse")
        }
    }
}
