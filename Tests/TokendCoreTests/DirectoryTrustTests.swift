import Testing

@testable import TokendCore

/// The rules for the directories tokend writes into, with the values `stat` would give (issue #18).
@Suite struct DirectoryTrustTests {
    static let daemon: UInt32 = 990

    func sink(_ kind: DirectoryStatus.Kind = .directory, owner: UInt32 = 0, mode: UInt32 = 0o755) -> String? {
        DirectoryTrust.problem(withSinkDirectory: DirectoryStatus(kind: kind, owner: owner, mode: mode), daemonUID: Self.daemon)
    }

    func state(_ kind: DirectoryStatus.Kind = .directory, owner: UInt32 = daemon, mode: UInt32 = 0o700) -> String? {
        DirectoryTrust.problem(withStateDirectory: DirectoryStatus(kind: kind, owner: owner, mode: mode), daemonUID: Self.daemon)
    }

    static let acceptedSinkDirectories: [(owner: UInt32, mode: UInt32)] = [
        (0, 0o755), (daemon, 0o700), (daemon, 0o750), (0, 0o711), (0, 0o2755),
    ]

    @Test(arguments: acceptedSinkDirectories)
    func aSinkDirectoryOfRootOrTokendThatNobodyElseMayWriteIsAccepted(_ owner: UInt32, _ mode: UInt32) {
        #expect(sink(owner: owner, mode: mode) == nil)
    }

    @Test func aSinkDirectoryThatIsASymbolicLinkIsRefusedWhoeverOwnsIt() {
        #expect(sink(.symbolicLink, owner: 0, mode: 0o777) == "it is a symbolic link; tokend writes sinks only into a real directory")
        #expect(sink(.other) == "it is not a directory")
    }

    @Test func aSinkDirectoryOfAnotherUserIsRefused() {
        #expect(sink(owner: 1000) == "it is owned by uid 1000, not by root or tokend's uid 990")
    }

    static let writableSinkDirectories: [(mode: UInt32, reason: String)] = [
        (0o777, "it is writable by others (mode 0777)"), (0o1777, "it is writable by others (mode 1777)"),
        (0o775, "it is writable by its group (mode 0775)"), (0o703, "it is writable by others (mode 0703)"),
    ]

    @Test(arguments: writableSinkDirectories)
    func aSinkDirectoryOthersMayWriteIsRefusedStickyBitOrNot(_ mode: UInt32, _ reason: String) {
        #expect(sink(mode: mode) == reason)
    }

    @Test func theStateDirectoryMustBeTokendsOwn() {
        #expect(state() == nil)
        // Readable by others is tightened by the cache, not refused.
        #expect(state(mode: 0o755) == nil)
        #expect(state(owner: 0) == "it is owned by uid 0, not by tokend's uid 990")
        #expect(state(mode: 0o770) == "it is writable by its group (mode 0770)")
        #expect(state(mode: 0o777) == "it is writable by others (mode 0777)")
        #expect(state(.other) == "it is not a directory")
        // Root's daemon with root's directory.
        let root = DirectoryTrust.problem(withStateDirectory: DirectoryStatus(kind: .directory, owner: 0, mode: 0o700), daemonUID: 0)
        #expect(root == nil)
    }
}
