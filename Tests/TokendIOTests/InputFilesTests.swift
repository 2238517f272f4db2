import Foundation
import Synchronization
import Testing
import TokendCore

@testable import TokendIO

#if canImport(Glibc)
import Glibc
#endif

/// The real inotify watch of input files (SPEC §11), in a private temporary directory.
@Suite(.timeLimit(.minutes(1))) final class InputFilesTests {
    let directory: String
    let files = InputFiles(credentialsDirectory: nil)
    let reported = Reports()

    init() throws {
        var template = Array("/tmp/tokend-inputs-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw POSIXError(.EIO) }
        directory = String(cString: made)
    }

    deinit {
        files.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Waits (on the continuous clock, at most 5 s) until `path` was reported.
    func waitForReport(of path: String) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            if reported.list.withLock({ $0.contains(path) }) { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    func watch(_ paths: Set<String>) -> Set<String> {
        files.watch(paths) { [reported] path in reported.list.withLock { $0.append(path) } }
    }

    @Test func aRenameOverTheFileAndARewriteInPlaceAreBothReported() async throws {
        let path = directory + "/token"
        try "one\n".write(toFile: path, atomically: false, encoding: .utf8)
        #expect(watch([path]).isEmpty)
        #expect(try files.read(.file(path: path)).get() == "one")

        try "two\n".write(toFile: path + ".new", atomically: false, encoding: .utf8)
        #expect(rename(path + ".new", path) == 0)
        #expect(try await waitForReport(of: path))
        #expect(try files.read(.file(path: path)).get() == "two")

        reported.list.withLock { $0 = [] }
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: Data("three".utf8))
        try handle.close()
        #expect(try await waitForReport(of: path))
        #expect(try files.read(.file(path: path)).get() == "three")
    }

    /// Kubernetes' projected volumes: the file is a symlink through `..data`, which is swapped for a new directory.
    @Test func aSwappedDataSymlinkIsReported() async throws {
        let path = directory + "/token"
        try FileManager.default.createDirectory(atPath: directory + "/..2026_01", withIntermediateDirectories: false)
        try "first".write(toFile: directory + "/..2026_01/token", atomically: false, encoding: .utf8)
        #expect(symlink("..2026_01", directory + "/..data") == 0)
        #expect(symlink("..data/token", path) == 0)
        #expect(watch([path]).isEmpty)

        try FileManager.default.createDirectory(atPath: directory + "/..2026_02", withIntermediateDirectories: false)
        try "second".write(toFile: directory + "/..2026_02/token", atomically: false, encoding: .utf8)
        #expect(symlink("..2026_02", directory + "/..data_tmp") == 0)
        #expect(rename(directory + "/..data_tmp", directory + "/..data") == 0)
        #expect(try await waitForReport(of: path))
        #expect(try files.read(.file(path: path)).get() == "second")
    }

    @Test func aFileInAMissingDirectoryIsLeftToPolling() {
        let missing = directory + "/nowhere/token"
        #expect(watch([missing]) == [missing])
    }

    @Test func aMissingFileIsAFailureThatNamesItAndNothingElse() {
        let path = directory + "/absent"
        guard case .failure(let error) = files.read(.file(path: path)) else {
            Issue.record("read an absent file")
            return
        }
        #expect(error.message == "file \(path) does not exist")
    }
}

/// The paths a watch reported, shared with its callback.
final class Reports: Sendable {
    let list = Mutex<[String]>([])
}
