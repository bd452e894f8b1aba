// The forwarding table as `ferry ctl fdb` reads it: a piece per hold of the workers' lock,
// sorted, aged entries left out, and sound when the table changes between pieces.

@testable import FerryEngine
import FerryTestSupport
import FerryWire
import Testing

@Suite("ForwardingSnapshot")
struct ForwardingSnapshotTests {
    /// The records of `table` at `now` as a model says they are: live ones, by MAC.
    func model(_ table: ForwardingTable, now: Int64) -> [ForwardingSnapshot.Record] {
        table.entries.filter { $0.value.isStatic || now - $0.value.lastSeen < table.ageingSeconds }
            .map { ForwardingSnapshot.Record(mac: $0.key.value, peer: $0.value.peer, ageSeconds: $0.value.isStatic ? nil : now - $0.value.lastSeen) }
            .sorted { $0.mac < $1.mac }
    }

    /// Pieces of any size give the same snapshot as one reading of the whole table, and no
    /// piece is longer than asked.
    @Test("read in pieces of at most slotsPerLock, it is the live table sorted by MAC")
    func piecesMakeTheWhole() {
        var table = ForwardingTable(capacity: 3000, ageingSeconds: 300)
        for n in 0..<2500 { table.learn(numberedMAC(n * 7919), peer: n % 3, now: 1000 + Int64(n % 400)) }
        for n in 0..<20 { table.addStatic(numberedMAC(900_000 + n), peer: 1) }
        let now: Int64 = 1350
        let expected = model(table, now: now)
        #expect(expected.count > 1000 && expected.count < 2520, "some entries aged: \(expected.count)")
        for slotsPerLock in [1, 7, 1024, table.slotCount, 10 * table.slotCount] {
            var pieces: [Range<Int>] = []
            let snapshot = ForwardingSnapshot.reading(slots: table.slotCount, slotsPerLock: slotsPerLock, now: now, ageing: 300,
                                                      peerAddresses: { ["a", "b", "c"] },
                                                      read: { range, out in pieces.append(range); table.copySlots(range, into: &out) })
            #expect(snapshot.records == expected, "slotsPerLock \(slotsPerLock)")
            #expect(pieces.allSatisfy { $0.count <= slotsPerLock })
            #expect(pieces.reduce(0) { $0 + $1.count } == table.slotCount, "every slot read once")
        }
    }

    /// The table changing between pieces, as workers change it: an entry moved across the read
    /// position (a removal shifts its cluster back, wrapping past the end) or learned again
    /// further on is never listed twice, and nothing is listed that was never in the table.
    /// (One moved back into a piece already read may be missing: the documented inconsistency.)
    @Test("changes between pieces never list a MAC twice")
    func changesBetweenPieces() {
        var table = ForwardingTable(capacity: 64, ageingSeconds: 300)
        for n in 0..<64 { table.learn(numberedMAC(n), peer: 0, now: 1000) }
        let known = Set((0..<64).map { numberedMAC($0).value })
        var rounds = 0
        let snapshot = ForwardingSnapshot.reading(slots: table.slotCount, slotsPerLock: 8, now: 1000, ageing: 300,
                                                  peerAddresses: { ["a", "b"] },
                                                  read: { range, out in
            table.copySlots(range, into: &out)
            // Between holds: forget and learn again the first MACs (new slots, shifted clusters).
            let n = rounds % 16
            rounds += 1
            table.forget(numberedMAC(n))
            table.learn(numberedMAC(n), peer: 1, now: 1000)
        })
        let macs = snapshot.records.map(\.mac)
        #expect(Set(macs).count == macs.count, "a MAC listed twice")
        #expect(macs == macs.sorted())
        #expect(Set(macs).isSubset(of: known))
        #expect(macs.count > 32, "most of the table is there: \(macs.count) of 64")
    }

    /// Through the state, as the control server asks: FDBEntry values with peer addresses,
    /// static entries with age 0, aged ones left out.
    @Test("the state's snapshot names peers and ages as ferry ctl fdb shows them")
    func throughTheState() throws {
        let clock = TestClock()
        var c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: local4, peers: [peer4a, peer4b], underlayMTU: 1500)
        c.ageingSeconds = 300
        c.staticEntries = [(numberedMAC(1), peer4b)]
        let state = try ForwardingState(configuration: c, clock: { clock.now })
        state.fdb.withLock { t in
            t.learn(numberedMAC(2), peer: 0, now: clock.now)
            t.learn(numberedMAC(3), peer: 0, now: clock.now - 400)
        }
        clock.advance(by: 5)
        let entries = state.forwardingSnapshot(slotsPerLock: 3).entries()
        #expect(entries == [
            FDBEntry(mac: numberedMAC(1).description, peer: peer4b.description, ageSeconds: 0, isStatic: true),
            FDBEntry(mac: numberedMAC(2).description, peer: peer4a.description, ageSeconds: 5, isStatic: false),
        ])
        #expect(state.forwardingEntries() == entries)
        #expect(state.forwardingSnapshot().entries(1..<5) == Array(entries[1...]), "a range past the end is clamped")
    }
}
