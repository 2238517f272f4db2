import Foundation
import Testing

/// The shipped unit files, checked with systemd's own tools.
@Suite struct SystemdUnitTests {
    static var unitDirectory: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.appendingPathComponent("systemd").path
    }

    @Test func serviceIsHardenedToAtMostOnePointFive() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["systemd-analyze", "security", "--offline=yes", Self.unitDirectory + "/tokend.service"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let line = try #require(text.split(separator: "\n").last { $0.contains("Overall exposure level") }, "\(text)")
        let score = try #require(line.split(separator: " ").compactMap { Double($0) }.first, "\(line)")
        #expect(score <= 1.5, "\(line)")
    }
}
