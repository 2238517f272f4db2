import Foundation
import NIOCore
import Testing
import TokendCore
import TokendTestSupport

@testable import TokendIO

#if canImport(Glibc)
import Glibc
#endif

/// The socket server itself on a real Unix socket in a temporary directory (issue #18, findings 1 and 9): it fails
/// closed when it cannot tell who calls, never changes a file through a symlink put where its socket was, and
/// refuses connections past its limits with an answer.
@Suite(.serialized, .timeLimit(.minutes(1))) struct UnixSocketServerTests {
    /// Requests the responder saw, and the answer it gives every one of them: 200 "served".
    final class Recorder: @unchecked Sendable {
        private let lock = NSLock()
        private var requests: [APIRequest] = []

        var seen: [APIRequest] { lock.withLock { requests } }

        var responder: UnixSocketServer.Responder {
            { request, respond, _ in
                self.lock.withLock { self.requests.append(request) }
                respond(APIResponse(status: 200, contentType: "text/plain; charset=utf-8", body: Array("served".utf8)))
            }
        }
    }

    /// A fresh temporary directory, removed after `body`.
    static func withDirectory(_ body: (String) async throws -> Void) async throws {
        var template = Array("/tmp/tokend-socket-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw POSIXError(.EIO) }
        let directory = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await body(directory)
    }

    /// Finding 9: when `SO_PEERCRED` cannot be read the caller is unknown, and an unknown caller is refused — it used
    /// to be served as if no `[access]` rule applied.
    @Test func aCallerWhoseCredentialsCannotBeReadIsRefused() async throws {
        try await Self.withDirectory { directory in
            let path = directory + "/tokend.sock"
            let recorder = Recorder()
            var seams = UnixSocketServer.Seams()
            seams.readCredentials = { channel in channel.eventLoop.makeFailedFuture(IOError(errnoCode: EINVAL, reason: "getsockopt")) }
            let server = try await UnixSocketServer.bind(path: path, mode: 0o600, seams: seams, responder: recorder.responder)
            let answer = try exchangeOnUnixSocket(path, "GET /v1/tokens/a HTTP/1.1\r\nHost: x\r\n\r\n")
            await server.close()
            #expect(answer.hasPrefix("HTTP/1.1 403 "), "\(answer.prefix(300))")
            #expect(answer.contains(#""error":"unknown_caller""#))
            #expect(recorder.seen.isEmpty, "the responder was asked: \(recorder.seen.map(\.path))")
        }
    }

    /// Finding 9: the socket file's group and mode are set without following a symlink.
    ///
    /// Someone who can write the socket's directory replaces the new socket with a symlink to another file before
    /// the mode is set: that file must keep its mode, and the daemon refuses to start.
    @Test func aSocketSwappedForASymlinkIsNotFollowed() async throws {
        try await Self.withDirectory { directory in
            let path = directory + "/tokend.sock"
            let victim = directory + "/victim"
            #expect(FileManager.default.createFile(atPath: victim, contents: Data("secret".utf8), attributes: [.posixPermissions: 0o600]))
            var seams = UnixSocketServer.Seams()
            seams.afterBind = {
                unlink(path)
                symlink(victim, path)
            }
            var setupError: UnixSocketServer.SetupError?
            do {
                let server = try await UnixSocketServer.bind(path: path, mode: 0o666, seams: seams, responder: Recorder().responder)
                await server.close()
            } catch let error as UnixSocketServer.SetupError {
                setupError = error
            }
            var info = stat()
            #expect(stat(victim, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o600, "the victim's mode became \(String(info.st_mode & 0o777, radix: 8))")
            #expect(setupError?.reason.contains("not the socket") == true, "\(String(describing: setupError))")
        }
    }

    /// The mode is the configured one, set on the socket itself.
    @Test func theSocketGetsItsMode() async throws {
        try await Self.withDirectory { directory in
            let path = directory + "/tokend.sock"
            let server = try await UnixSocketServer.bind(path: path, mode: 0o640, responder: Recorder().responder)
            var info = stat()
            #expect(lstat(path, &info) == 0)
            #expect(info.st_mode & S_IFMT == S_IFSOCK)
            #expect(info.st_mode & 0o777 == 0o640)
            await server.close()
        }
    }

    /// Finding 1 at the socket: a caller past its share gets a 503 with the reason, while an admin — here a child
    /// process (curl), told apart by its pid because a test without root has one uid — is still served.
    @Test func aCallerPastItsShareIsAnsweredAndAnAdminStillServed() async throws {
        try await Self.withDirectory { directory in
            let path = directory + "/tokend.sock"
            var limits = UnixSocketServer.Limits()
            limits.connections = ConnectionAdmission.Limits(maxConnections: 6, perCaller: 100, adminReserve: 2)
            let testProcess = getpid()
            let server = try await UnixSocketServer.bind(
                path: path,
                mode: 0o600,
                limits: limits,
                isAdmin: { $0.pid != testProcess },
                responder: Recorder().responder
            )
            var held: [Int32] = []
            defer { for fd in held { close(fd) } }
            for _ in 0..<4 { if let fd = connectUnixSocket(path) { held.append(fd) } }
            let refused = try exchangeOnUnixSocket(path, "GET /v1/tokens/a HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(refused.hasPrefix("HTTP/1.1 503 "), "\(refused.prefix(300))")
            #expect(refused.contains(#""error":"fair_share_reached""#) || refused.contains(#""error":"socket_busy""#), "\(refused)")
            let curl = Process()
            curl.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            curl.arguments = ["curl", "-s", "--max-time", "5", "--unix-socket", path, "http://localhost/v1/tokens/a"]
            let output = Pipe()
            curl.standardOutput = output
            try curl.run()
            let body = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            curl.waitUntilExit()
            #expect(body == "served")
            await server.close()
        }
    }
}
