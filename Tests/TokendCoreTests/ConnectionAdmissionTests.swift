import Testing

@testable import TokendCore

/// The socket's admission rules (SPEC §8) with values: per-caller caps, the admins' places, the fair share.
@Suite struct ConnectionAdmissionTests {
    static func limits(_ maxConnections: Int, perCaller: Int, adminReserve: Int) -> ConnectionAdmission.Limits {
        ConnectionAdmission.Limits(maxConnections: maxConnections, perCaller: perCaller, adminReserve: adminReserve)
    }

    /// Admits `count` connections of `uid`; returns the tickets of those admitted and the refusals.
    static func open(
        _ count: Int,
        uid: UInt32,
        isAdmin: Bool = false,
        in admission: inout ConnectionAdmission
    ) -> (tickets: [ConnectionAdmission.Ticket], refusals: [ConnectionAdmission.Refusal]) {
        var result: (tickets: [ConnectionAdmission.Ticket], refusals: [ConnectionAdmission.Refusal]) = ([], [])
        for _ in 0..<count {
            switch admission.admit(uid: uid, isAdmin: isAdmin) {
            case .admit(let ticket): result.tickets.append(ticket)
            case .refuse(let refusal): result.refusals.append(refusal)
            }
        }
        return result
    }

    @Test func theDefaultsAreTheSpecs() {
        let limits = ConnectionAdmission.Limits()
        #expect(limits.maxConnections == 1024)
        #expect(limits.perCaller == 64)
        #expect(limits.adminReserve == 64)
    }

    /// Finding 1: 1,100 connections of one uid; it gets 64, and every other caller still gets in.
    @Test func oneCallerGetsItsCapAndTheOthersStillGetIn() {
        var admission = ConnectionAdmission()
        let attacker = Self.open(1100, uid: 65534, in: &admission)
        #expect(attacker.tickets.count == 64)
        #expect(Set(attacker.refusals) == [.callerLimit])
        #expect(admission.admit(uid: 1000, isAdmin: false) == .admit(.init(uid: 1000, isAdmin: false)))
        #expect(admission.admit(uid: 0, isAdmin: true) == .admit(.init(uid: 0, isAdmin: true)))
        #expect(admission.total == 66)
    }

    @Test func theCapAppliesToAdminsToo() {
        var admission = ConnectionAdmission(limits: Self.limits(100, perCaller: 3, adminReserve: 10))
        let root = Self.open(5, uid: 0, isAdmin: true, in: &admission)
        #expect(root.tickets.count == 3)
        #expect(root.refusals == [.callerLimit, .callerLimit])
    }

    @Test func releasingATicketFreesItsPlace() {
        var admission = ConnectionAdmission(limits: Self.limits(100, perCaller: 2, adminReserve: 10))
        let first = Self.open(3, uid: 7, in: &admission)
        #expect(first.refusals == [.callerLimit])
        admission.release(first.tickets[0])
        #expect(admission.perCaller[7] == 1)
        #expect(Self.open(1, uid: 7, in: &admission).tickets.count == 1)
        for ticket in first.tickets.dropFirst() { admission.release(ticket) }
        #expect(admission.perCaller[7] == 1)
        #expect(admission.total == 1)
        #expect(admission.shared == 1)
    }

    /// Non-admins fill every shared place; admins still get the places kept for them, and no more than the total.
    @Test func adminsKeepTheirPlacesWhenTheSharedOnesAreFull() {
        var admission = ConnectionAdmission(limits: Self.limits(12, perCaller: 2, adminReserve: 4))
        var sharedTickets = 0
        for uid in UInt32(100)..<UInt32(110) { sharedTickets += Self.open(2, uid: uid, in: &admission).tickets.count }
        #expect(sharedTickets == 8)
        #expect(admission.admit(uid: 200, isAdmin: false) == .refuse(.full))
        #expect(Self.open(2, uid: 0, isAdmin: true, in: &admission).tickets.count == 2)
        #expect(Self.open(2, uid: 999, isAdmin: true, in: &admission).tickets.count == 2)
        #expect(admission.admit(uid: 998, isAdmin: true) == .refuse(.full))
        #expect(admission.total == 12)
    }

    /// A caller allowed many connections stops at its fair share once the shared places are half taken, so that a
    /// newcomer still finds one.
    @Test func aBusySocketKeepsAShareForANewcomer() {
        var admission = ConnectionAdmission(limits: Self.limits(20, perCaller: 100, adminReserve: 4))
        let greedy = Self.open(20, uid: 1, in: &admission)
        // 16 shared places, one caller: its share is 16 / 2.
        #expect(greedy.tickets.count == 8)
        #expect(Set(greedy.refusals) == [.fairShare])
        let second = Self.open(20, uid: 2, in: &admission)
        // Two callers: 16 / 3 each; the second one is below it until it holds 5.
        #expect(second.tickets.count == 5)
        #expect(Self.open(1, uid: 3, in: &admission).tickets.count == 1)
        #expect(admission.shared == 14)
    }

    /// Below half the shared places the fair share does not apply.
    @Test func aQuietSocketHasNoFairShare() {
        var admission = ConnectionAdmission(limits: Self.limits(1024, perCaller: 64, adminReserve: 64))
        for uid in UInt32(1)...UInt32(7) { #expect(Self.open(64, uid: uid, in: &admission).tickets.count == 64) }
        #expect(admission.shared == 448)
    }

    @Test func releasingAnUnknownTicketChangesNothing() {
        var admission = ConnectionAdmission()
        admission.release(.init(uid: 5, isAdmin: false))
        #expect(admission.total == 0)
        #expect(admission.shared == 0)
    }

    @Test func refusalCodesAreStable() {
        #expect(ConnectionAdmission.Refusal.allCases.map(\.rawValue) == ["too_many_connections", "socket_busy", "fair_share_reached"])
    }
}
