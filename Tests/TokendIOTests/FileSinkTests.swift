import Foundation
import Testing
import TokendCore

@testable import TokendIO

#if canImport(Glibc)
import Glibc
#endif

/// Sink files written into a directory that someone else may tamper with (issue #18, finding 4): each test has its
/// own temporary tree, removed when it ends (the suite is a class for its `deinit`).
///
/// The layout: `<tmp>/shared` (0777 with the sticky bit, like /tmp: anyone may add entries) holds the sink
/// directory `sinks`; `<tmp>/victim` holds a file `alpha.token` that only its owner may read, which the attack
/// points the sink at.
@Suite final class FileSinkTests {
    let temporary: String
    let shared: String
    let sinks: String
    let victim: String
    let target: SinkTarget

    init() throws {
        var template = Array("/tmp/tokend-sink-XXXXXX".utf8CString)
        temporary = String(cString: try #require(mkdtemp(&template)))
        shared = temporary + "/shared"
        sinks = shared + "/sinks"
        victim = temporary + "/victim"
        try FileManager.default.createDirectory(atPath: sinks, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: victim, withIntermediateDirectories: true)
        chmod(shared, 0o1777)
        chmod(sinks, 0o755)
        try "precious".write(toFile: victim + "/alpha.token", atomically: false, encoding: .utf8)
        chmod(victim + "/alpha.token", 0o600)
        target = SinkTarget(path: sinks + "/alpha.token", mode: 0o640, uid: nil, gid: nil)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: temporary)
    }

    var victimText: String? { try? String(contentsOfFile: victim + "/alpha.token", encoding: .utf8) }

    /// Swaps the sink directory for a symlink to the victim's directory, as a local user could in `shared`.
    func swapSinkDirectoryForSymlink() throws {
        try FileManager.default.moveItem(atPath: sinks, toPath: shared + "/sinks.old")
        try FileManager.default.createSymbolicLink(atPath: sinks, withDestinationPath: victim)
    }

    @Test func writesTheTokenWithItsModeAndLeavesNoTempFile() throws {
        try FileSink.write(Secret("tok-1"), to: target)
        try FileSink.write(Secret("tok-2"), to: target)
        #expect(try String(contentsOfFile: target.path, encoding: .utf8) == "tok-2")
        var info = stat()
        #expect(lstat(target.path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o640)
        #expect(try FileManager.default.contentsOfDirectory(atPath: sinks) == ["alpha.token"])
        try FileSink.remove(target)
        #expect(try FileManager.default.contentsOfDirectory(atPath: sinks).isEmpty)
        // Removing what is not there is no error.
        try FileSink.remove(target)
    }

    @Test func aSinkDirectorySwappedForASymlinkIsRefusedAndWhatItPointsAtIsUntouched() throws {
        try FileSink.write(Secret("tok-1"), to: target)
        try swapSinkDirectoryForSymlink()
        #expect(throws: CacheError.self) { try FileSink.write(Secret("tok-2"), to: self.target) }
        #expect(victimText == "precious", "the write followed the symlink")
        #expect(throws: CacheError.self) { try FileSink.remove(self.target) }
        #expect(victimText == "precious", "the removal followed the symlink")
        #expect(try FileManager.default.contentsOfDirectory(atPath: victim) == ["alpha.token"])
        do {
            try FileSink.write(Secret("tok-3"), to: target)
        } catch {
            #expect("\(error)".contains("symbolic link"), "\(error)")
        }
    }

    @Test(arguments: [0o777, 0o775, 0o1777])
    func aSinkDirectoryOthersMayWriteIsRefused(_ mode: Int) throws {
        chmod(sinks, mode_t(mode))
        #expect(throws: CacheError.self) { try FileSink.write(Secret("tok-1"), to: self.target) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: sinks).isEmpty)
    }

    @Test(.enabled(if: getuid() == 0, "needs root: gives the sink directory to another uid"))
    func aSinkDirectoryOwnedBySomeoneElseIsRefused() throws {
        try FileSink.write(Secret("tok-1"), to: target)
        #expect(chown(sinks, 4242, 4242) == 0)
        #expect(throws: CacheError.self) { try FileSink.write(Secret("tok-2"), to: self.target) }
        #expect(try String(contentsOfFile: target.path, encoding: .utf8) == "tok-1")
        #expect(throws: CacheError.self) { try FileSink.remove(self.target) }
        #expect(FileManager.default.fileExists(atPath: target.path))
    }

    @Test func aSinkFileThatIsASymlinkIsReplacedNotFollowed() throws {
        try FileManager.default.createSymbolicLink(atPath: target.path, withDestinationPath: victim + "/alpha.token")
        try FileSink.write(Secret("tok-1"), to: target)
        #expect(victimText == "precious")
        #expect(try String(contentsOfFile: target.path, encoding: .utf8) == "tok-1")
        try FileManager.default.removeItem(atPath: target.path)
        try FileManager.default.createSymbolicLink(atPath: target.path, withDestinationPath: victim + "/alpha.token")
        try FileSink.remove(target)
        #expect(victimText == "precious")
        #expect(!FileManager.default.fileExists(atPath: target.path))
    }
}
