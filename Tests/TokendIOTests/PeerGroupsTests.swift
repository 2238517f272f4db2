import Testing
@testable import TokendIO

#if canImport(Glibc)
import Glibc
#endif

/// Supplementary groups of a connecting process, from its `/proc/<pid>/status`, for `[access] groups`.
@Suite struct PeerGroupsTests {
    static func groups(_ status: String) -> Set<UInt32> {
        PeerGroups.groups(inProcStatus: ArraySlice(Array(status.utf8)))
    }

    @Test func theGroupsLineIsParsed() {
        let status = "Name:\tcurl\nUmask:\t0022\nGid:\t100\t100\t100\t100\nGroups:\t4 24 27 4294967295 \nNStgid:\t1\n"
        #expect(Self.groups(status) == [4, 24, 27, 4_294_967_295])
    }

    @Test func noGroupsAndMissingOrBrokenLinesGiveNone() {
        #expect(Self.groups("Name:\tx\nGroups:\t\nNStgid:\t1\n").isEmpty)
        #expect(Self.groups("Name:\tx\nGid:\t1\n").isEmpty)
        #expect(Self.groups("Groups:\t5\n").isEmpty)  // not at a line start: never the first line of the file
        #expect(Self.groups("Name:\tx\nGroups:\t12 x13 4294967296 14") == [12, 14])
    }

    @Test func ourOwnProcessMatchesGetgroups() {
        var ids = [gid_t](repeating: 0, count: 256)
        let count = getgroups(Int32(ids.count), &ids)
        #expect(count >= 0)
        #expect(PeerGroups.supplementaryGroups(of: getpid()) == Set(ids.prefix(Int(count)).map { UInt32($0) }))
    }
}
