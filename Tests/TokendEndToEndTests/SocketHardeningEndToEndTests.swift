import Dispatch
import Foundation
import Testing
import TokendCore
import TokendTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Issue #18, findings 1, 2 and 9 through the real binary: one caller cannot lock the others out (a cap per uid, a
/// deadline for a request head, places kept for admins), a caller that never reads its answers is stopped, and an
/// upgrade request is refused at once.
@Suite(.serialized, .timeLimit(.minutes(4))) struct SocketHardeningEndToEndTests {
    /// A raw client connection with deadlines (no SIGPIPE, no blocking forever).
    final class RawConnection {
        let fd: Int32
        private(set) var received: [UInt8] = []

        init(_ path: String) throws {
            guard let fd = connectUnixSocket(path) else { throw POSIXError(.ECONNREFUSED) }
            self.fd = fd
        }

        deinit { close(fd) }

        /// Writes all of `text` (or as much as the daemon takes before it closes).
        func send(_ text: String) {
            _ = Array(text.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }

        /// Reads until `condition` holds for what was received, the daemon closes, or `timeout` seconds pass;
        /// returns whether the daemon closed.
        @discardableResult
        func read(timeout: Double, until condition: (String) -> Bool = { _ in false }) -> Bool {
            let deadline = Deadline(timeout)
            var buffer = [UInt8](repeating: 0, count: 16 * 1024)
            while !condition(text) {
                let left = deadline.left
                guard left > 0 else { return false }
                var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&descriptor, 1, Int32(left * 1000) + 1) > 0 else { continue }
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard count > 0 else { return true }
                received += buffer[0..<count]
            }
            return false
        }

        var text: String { String(decoding: received, as: UTF8.self) }
    }

    /// Settings with the connection limits first (top-level keys must come before the harness's `[refresh]`).
    static func settings(_ lines: String) -> String {
        lines + "\n" + DaemonHarness.fastSettings
    }

    /// The daemon's resident memory in KiB (`VmRSS`).
    static func residentKiB(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    // MARK: - Finding 1: one user locks everyone out

    /// A caller that holds its cap — idle connections and watch streams alike — gets a 503 with a JSON reason for
    /// the next connection (not a reset), and a place freed is a place it gets again.
    ///
    /// Runs as any user: the cap applies to admins too (the daemon's own uid is one).
    @Test func aCallerPastItsConnectionCapGetsA503() async throws {
        try await DaemonHarness.withRunning("alpha", settings: Self.settings("max_connections_per_uid = 8")) { harness in
            var held: [RawConnection] = []
            for _ in 0..<4 { held.append(try RawConnection(harness.socketPath)) }
            for _ in 0..<4 {
                let watch = try RawConnection(harness.socketPath)
                watch.send("GET /v1/tokens/alpha/watch HTTP/1.1\r\nHost: x\r\n\r\n")
                watch.read(timeout: 5) { $0.contains("event: token") }
                #expect(watch.text.contains("event: token"), "watch stream: \(watch.text.prefix(200))")
                held.append(watch)
            }
            let ninth = try RawConnection(harness.socketPath)
            ninth.send("GET /v1/tokens/alpha?format=raw HTTP/1.1\r\nHost: x\r\n\r\n")
            let closed = ninth.read(timeout: 5)
            #expect(closed, "the refused connection was closed")
            #expect(ninth.text.hasPrefix("HTTP/1.1 503 "), "\(ninth.text.prefix(300))")
            #expect(ninth.text.contains(#""error":"too_many_connections""#))
            #expect(ninth.text.contains("Connection: close"))
            #expect(!ninth.text.contains("tok-"))
            // Logged with the caller, in the summarised refusal log like a refused request.
            try await eventually("the refused connection is logged") {
                harness.log.split(separator: "\n").contains {
                    $0.contains("request refused") && $0.contains("connection (too_many_connections)")
                        && $0.contains("peer.uid=\(getuid())")
                }
            }

            held.removeFirst()
            try await eventually("a freed place is taken again") {
                let again = try RawConnection(harness.socketPath)
                again.send("GET /v1/tokens/alpha?format=raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                again.read(timeout: 5)
                return again.text.hasPrefix("HTTP/1.1 200 ")
            }
            held.removeAll()
            #expect(try await harness.stop() == 0)
        }
    }

    /// A request head sent one byte at a time (slowloris) keeps the idle timeout from firing; the head deadline
    /// closes it.
    @Test func aHeadTrickledByteByByteIsCutOffAtItsDeadline() async throws {
        try await DaemonHarness.withRunning("alpha", settings: Self.settings(#"request_head_timeout = "1s""#)) { harness in
            let slow = try RawConnection(harness.socketPath)
            let head = Array("GET /v1/tokens/alpha HTTP/1.1\r\nHost: x\r\nX-Slow: " + String(repeating: "a", count: 200))
            let started = Stopwatch()
            var closedAfter: Double?
            for byte in head {
                slow.send(String(byte))
                if slow.read(timeout: 0.2) {
                    closedAfter = started.elapsed
                    break
                }
                if started.elapsed > 8 { break }
            }
            let after = try #require(closedAfter, "still open after \(started.elapsed) s of trickling")
            #expect(after < 4, "closed only after \(after) s")
            #expect(!slow.text.contains("200 OK"))
            // A whole head, sent at once, is answered as always.
            #expect(try await harness.token("alpha") != nil)
            #expect(try await harness.stop() == 0)
        }
    }

    /// The issue's attack: uid 65534 holds 1,100 connections — idle, slowloris heads and watch streams — while root
    /// and a second uid ask for tokens; all of them are served, and uid 65534 got no more than its cap.
    @Test(.enabled(if: Privileges.isRoot, "needs root: setpriv runs the attacker and the second caller as other uids"))
    func oneUidHolding1100ConnectionsLocksNobodyOut() async throws {
        try await DaemonHarness.with { harness in
            try harness.openUpForOtherUsers()
            try harness.writeInstance("alpha")
            try harness.start()
            try await harness.waitUntilReady()
            let attacker = try Self.startAttacker(socket: harness.socketPath, connections: 1100)
            defer { attacker.stop() }
            let report = try #require(attacker.waitForLine(prefix: "held", timeout: 60), "the attacker never reported")
            var served = 0
            for _ in 0..<20 where try await harness.token("alpha") != nil { served += 1 }
            #expect(served == 20, "root was served \(served) of 20 times while \(report)")
            let second = ["setpriv", "--reuid=4242", "--regid=4242", "--clear-groups"]
            for _ in 0..<5 {
                #expect(try harness.curl(["http://localhost/v1/tokens/alpha?format=raw"], as: second).status == 200, "\(report)")
            }
            print("uid 65534 attacking with 1,100 connections: \(report); root served \(served) of 20")
            let admitted = Int(report.split(separator: " ").dropFirst().first ?? "") ?? -1
            #expect(admitted <= 64, "uid 65534 holds \(admitted) connections: \(report)")
            attacker.stop()
            #expect(try await harness.stop() == 0)
        }
    }

    /// A Python process as uid 65534 that holds `connections` connections to `socket` until its stdin closes.
    ///
    /// A third each are idle, trickle a head and watch. It prints `held N refused M` once all are open and no more
    /// than `settled` are undecided, or after 15 s (N: still open, M: answered 503 or closed).
    static func startAttacker(socket: String, connections: Int, settled: Int = 64) throws -> Helper {
        let script = #"""
            import os, resource, select, socket, sys, time
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            path, count = sys.argv[1], int(sys.argv[2])
            conns = []
            for i in range(count):
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(path)
                except OSError:
                    continue
                kind = i % 3
                try:
                    if kind == 1: s.send(b"G")
                    if kind == 2: s.send(b"GET /v1/tokens/alpha/watch HTTP/1.1\r\nHost: x\r\n\r\n")
                except OSError:
                    pass
                s.setblocking(False)
                conns.append((kind, s))
            # Until no more than `settled` are left undecided, or 15 s: on a busy machine the daemon may take a while
            # to accept (and refuse) a backlog of 1,100; a connection still open then counts as held.
            settled = int(sys.argv[3])
            deadline = time.time() + 15
            open_ = conns
            refused = 0
            while True:
                still = []
                for kind, s in open_:
                    try:
                        data = s.recv(4096)
                        if data == b"" or data.startswith(b"HTTP/1.1 503"):
                            refused += 1
                            s.close()
                            continue
                    except BlockingIOError:
                        pass
                    except OSError:
                        refused += 1
                        s.close()
                        continue
                    still.append((kind, s))
                open_ = still
                if len(open_) <= settled or time.time() > deadline:
                    break
                time.sleep(0.2)
            print("held %d refused %d" % (len(open_), refused), flush=True)
            while True:
                r, _, _ = select.select([sys.stdin], [], [], 0.5)
                if r and not sys.stdin.read(1):
                    break
                for kind, s in open_:
                    if kind == 1:
                        try: s.send(b"E")
                        except OSError: pass
            """#
        return try Helper([
            "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script, socket, String(connections),
            String(settled),
        ])
    }

    /// A child process whose stdout is read line by line, stopped by closing its stdin.
    final class Helper: @unchecked Sendable {
        let process = Process()
        private let input = Pipe()
        private let output = Pipe()

        init(_ arguments: [String]) throws {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = arguments
            process.standardInput = input
            process.standardOutput = output
            try process.run()
        }

        /// The first line starting with `prefix`, or nil after `timeout` seconds or at the end of the output.
        func waitForLine(prefix: String, timeout: Double) -> String? {
            let fd = output.fileHandleForReading.fileDescriptor
            let deadline = Deadline(timeout)
            var text = ""
            var buffer = [UInt8](repeating: 0, count: 4096)
            while deadline.left > 0 {
                if let line = text.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) { return String(line) }
                var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&descriptor, 1, 200) > 0 else { continue }
                let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                guard count > 0 else { break }
                text += String(decoding: buffer[0..<count], as: UTF8.self)
            }
            return text.split(separator: "\n").first { $0.hasPrefix(prefix) }.map(String.init)
        }

        func stop() {
            try? input.fileHandleForWriting.close()
            if process.isRunning {
                let deadline = Deadline(5)
                while process.isRunning, !deadline.passed { usleep(20_000) }
                if process.isRunning { process.terminate() }
            }
        }
    }

    // MARK: - Finding 2: no output backpressure

    /// Bytes each pipelining client got the daemon to take.
    final class Pushed: @unchecked Sendable {
        private let lock = NSLock()
        private var values: [Int] = []

        func add(_ value: Int) { lock.withLock { values.append(value) } }
        var all: [Int] { lock.withLock { values } }
    }

    /// Three connections pipeline token requests and never read an answer.
    ///
    /// The daemon stops reading them once their answers back up: the clients cannot push more than the socket
    /// buffers hold, and the daemon's memory stays put.
    @Test func aClientThatPipelinesAndNeverReadsIsHeldBack() async throws {
        try await DaemonHarness.withRunning("alpha") { harness in
            #expect(try await harness.token("alpha") != nil)
            let pid = try #require(harness.process?.processIdentifier)
            let before = Self.residentKiB(pid)
            let path = harness.socketPath
            let pushed = Pushed()
            await SocketLoadEndToEndTests.onThreads(3) { _ in
                guard let fd = connectUnixSocket(path) else { return }
                defer { close(fd) }
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                let chunk = Array(String(repeating: "GET /v1/tokens/alpha?format=raw HTTP/1.1\r\nHost: x\r\n\r\n", count: 1000).utf8)
                var total = 0
                let deadline = Deadline(6)
                while !deadline.passed {
                    // Partial writes go on where they stopped: the stream stays a sequence of whole requests.
                    let offset = total % chunk.count
                    let count = chunk.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
                    if count > 0 {
                        total += count
                    } else if errno == EAGAIN {
                        var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                        _ = poll(&descriptor, 1, 100)
                    } else {
                        break
                    }
                }
                pushed.add(total)
            }
            let after = Self.residentKiB(pid)
            let total = pushed.all.reduce(0, +)
            print("pipelining without reading: pushed \(pushed.all) bytes; RSS \(before) → \(after) KiB")
            // Held back, each connection takes what the socket buffers and one round of reads hold (under 1 MiB);
            // before, the daemon read on for as long as it could answer (14 MB in the 6 s, debug build).
            #expect(total < 4 << 20, "the three connections pushed \(total) bytes")
            #expect(after - before < 64 * 1024, "RSS grew from \(before) to \(after) KiB")
            #expect(try await harness.token("alpha") != nil)
            #expect(try await harness.stop() == 0)
        }
    }

    // MARK: - Finding 9: an upgrade request

    /// `Upgrade: h2c` is answered at once with a 400 that says why, and the connection closes (it used to be
    /// answered as HTTP/1.1 and then stall: llhttp parses nothing after an upgrade request).
    @Test func anUpgradeRequestGetsA400AndTheConnectionCloses() async throws {
        try await DaemonHarness.withRunning("alpha") { harness in
            let connection = try RawConnection(harness.socketPath)
            connection.send(
                "GET /v1/tokens/alpha?format=raw HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                    + "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            let closed = connection.read(timeout: 5)
            #expect(closed, "the connection stayed open: \(connection.text.prefix(300))")
            #expect(connection.text.hasPrefix("HTTP/1.1 400 "), "\(connection.text.prefix(300))")
            #expect(connection.text.contains(#""error":"upgrade_not_supported""#))
            #expect(!connection.text.contains("tok-"))
            #expect(try await harness.stop() == 0)
        }
    }
}
