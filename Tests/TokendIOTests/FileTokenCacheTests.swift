import Foundation
import Testing
import TokendCore

@testable import TokendIO

#if canImport(Glibc)
import Glibc
#endif

/// Each test gets its own temporary directory, removed when the test ends (the suite is a class for its `deinit`).
@Suite final class FileTokenCacheTests {
    let temporary: String
    let directory: String
    let cache: FileTokenCache

    init() throws {
        var template = Array("/tmp/tokend-cache-XXXXXX".utf8CString)
        temporary = String(cString: try #require(mkdtemp(&template)))
        directory = temporary + "/state"
        cache = FileTokenCache(directory: directory)
        try cache.prepare()
    }

    deinit {
        try? FileManager.default.removeItem(atPath: temporary)
    }

    func record(_ name: String = "alpha", token: String = "tok-1") -> CacheRecord {
        let obtained = Date()
        return CacheRecord(
            instance: name,
            token: IssuedToken(
                accessToken: Secret(token),
                tokenType: "Bearer",
                scope: "read",
                obtainedAt: obtained,
                expiresAt: obtained.addingTimeInterval(60)
            ),
            fingerprint: String(repeating: "a", count: 64)
        )
    }

    @Test func storesAndLoadsWithPrivateModes() throws {
        try cache.store(record())
        guard case .loaded(let loaded) = cache.load(instance: "alpha") else {
            Issue.record("not loaded")
            return
        }
        #expect(loaded.access_token == "tok-1")
        let fileMode = try FileManager.default.attributesOfItem(atPath: directory + "/alpha.json")[.posixPermissions] as? Int
        let directoryMode = try FileManager.default.attributesOfItem(atPath: directory)[.posixPermissions] as? Int
        #expect(fileMode == 0o600)
        #expect(directoryMode == 0o700)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["alpha.json"])
    }

    @Test func aBatchStoresEveryRecordWithPrivateModesAndLeavesNoTempFile() throws {
        try cache.store(record("i3", token: "old"))
        let names = (0..<50).map { "i\($0)" }
        let failures = cache.store(batch: names.map { record($0, token: "tok-\($0)") })
        #expect(failures.isEmpty)
        for name in names {
            guard case .loaded(let loaded) = cache.load(instance: name) else {
                Issue.record("\(name) not loaded")
                continue
            }
            #expect(loaded.access_token == "tok-\(name)")
            let mode = try FileManager.default.attributesOfItem(atPath: directory + "/\(name).json")[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(files.sorted() == names.map { "\($0).json" }.sorted())
    }

    @Test func aBatchReportsTheRecordsItCouldNotWriteAndStoresTheRest() throws {
        // A directory where a record's temp file would go (its name is random) cannot be made to fail; a cache file
        // that is a directory can: rename(2) of a file over a directory fails with EISDIR.
        try FileManager.default.createDirectory(atPath: directory + "/blocked.json", withIntermediateDirectories: false)
        let failures = cache.store(batch: [record("a1"), record("blocked"), record("a2")])
        #expect(failures.map(\.instance) == ["blocked"])
        #expect(failures.first?.error.operation == "rename")
        guard case .loaded = cache.load(instance: "a1"), case .loaded = cache.load(instance: "a2") else {
            Issue.record("the other records were not stored")
            return
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(files.sorted() == ["a1.json", "a2.json", "blocked.json"])
    }

    @Test func missingFileIsMissing() {
        #expect(cache.load(instance: "nobody") == .missing)
    }

    @Test(arguments: ["", "{", "{\"version\":1}", "[1,2,3]", "\u{0}\u{1}binary"])
    func corruptFilesAreMovedAside(_ content: String) throws {
        try content.write(toFile: directory + "/alpha.json", atomically: false, encoding: .utf8)
        guard case .movedAside = cache.load(instance: "alpha") else {
            Issue.record("expected moved aside")
            return
        }
        #expect(FileManager.default.fileExists(atPath: directory + "/alpha.json.corrupt"))
        #expect(!FileManager.default.fileExists(atPath: directory + "/alpha.json"))
    }

    @Test func aRecordOfAnotherInstanceIsForeign() throws {
        try cache.store(record("other"))
        try FileManager.default.moveItem(atPath: directory + "/other.json", toPath: directory + "/alpha.json")
        guard case .movedAside = cache.load(instance: "alpha") else {
            Issue.record("expected moved aside")
            return
        }
    }

    @Test func symlinksAreNeverFollowed() throws {
        try cache.store(record("target"))
        try FileManager.default.createSymbolicLink(atPath: directory + "/alpha.json", withDestinationPath: directory + "/target.json")
        #expect(cache.load(instance: "alpha") == .movedAside(reason: "is a symlink"))
        // The target is untouched.
        guard case .loaded = cache.load(instance: "target") else {
            Issue.record("target damaged")
            return
        }
    }

    @Test func prepareRemovesLeftoverTempFiles() throws {
        try "partial".write(toFile: directory + "/.alpha.json.tmp-1-2", atomically: false, encoding: .utf8)
        try cache.prepare()
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }

    /// A state directory another user may write could hold a cache record planted for tokend to serve (issue #18,
    /// finding 9): the cache refuses it instead of tightening its mode and trusting what is inside.
    @Test(arguments: [0o777, 0o770, 0o733, 0o1777])
    func aStateDirectoryOthersMayWriteIsRefused(_ mode: Int) throws {
        try cache.store(record())
        #expect(chmod(directory, mode_t(mode)) == 0)
        #expect(throws: CacheError.self) { try self.cache.prepare() }
        let after = try FileManager.default.attributesOfItem(atPath: directory)[.posixPermissions] as? Int
        #expect(after == mode, "prepare changed the mode of a directory it refused")
    }

    @Test(.enabled(if: getuid() == 0, "needs root: gives the state directory to another uid"))
    func aStateDirectoryOwnedBySomeoneElseIsRefused() throws {
        #expect(chown(directory, 4242, 4242) == 0)
        do {
            try cache.prepare()
            Issue.record("prepare accepted a state directory owned by uid 4242")
        } catch {
            #expect(error.description.contains("owned by uid 4242"), "\(error)")
        }
    }

    @Test func aStateDirectoryOnlyReadableByOthersIsTightened() throws {
        #expect(chmod(directory, 0o755) == 0)
        try cache.prepare()
        let after = try FileManager.default.attributesOfItem(atPath: directory)[.posixPermissions] as? Int
        #expect(after == 0o700)
    }

    @Test func removeDeletesTheFile() throws {
        try cache.store(record())
        cache.remove(instance: "alpha")
        #expect(cache.load(instance: "alpha") == .missing)
    }
}
