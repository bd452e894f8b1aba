// What `ferry ctl stats` reads: the egress and ingress counter blocks summed, every name there.

import FerryEngine
import FerryLinux
import FerryWire
import Foundation
import Testing

@Suite("Statistics")
struct StatisticsTests {
    @Test("every counter and every drop reason is listed by name, zero or not")
    func everyNameIsPresent() throws {
        let h = try Harness()
        let s = h.statistics
        #expect(Set(s.drops.keys) == Set(DropReason.allCases.map(\.name)))
        #expect(Set(s.counters.keys) == Set(Counter.allCases.map(\.name)))
        #expect(s.drops.values.allSatisfy { $0 == 0 })
        #expect(s.peers.map(\.address) == [peer4a.description, peer4b.description])
        #expect(s.peers.allSatisfy { !$0.learned })
        #expect(s.fdbEntries == 0)
        #expect(Set(DropReason.allCases.map(\.name)).count == DropReason.allCases.count, "names are unique")
    }

    @Test("each counter is the sum of the egress and the ingress block")
    func sumsBothBlocks() throws {
        let h = try Harness()
        let f = h.worker
        for (k, reason) in DropReason.allCases.enumerated() {
            f.egressCounters.add(f.layout.index(reason), UInt64(k + 1))
            f.ingressCounters.add(f.layout.index(reason), 1000)
        }
        f.egressCounters.add(f.layout.index(.sentPackets), 3)
        f.ingressCounters.add(f.layout.index(.sentPackets), 4)
        f.egressCounters.add(f.layout.index(peer: 1, .rxBytes), 5)
        f.ingressCounters.add(f.layout.index(peer: 1, .rxBytes), 6)
        let s = h.statistics
        for (k, reason) in DropReason.allCases.enumerated() { #expect(s.drops(reason) == UInt64(k + 1001)) }
        #expect(s.counter(.sentPackets) == 7)
        #expect(s.peers[1].rxBytes == 11)
        #expect(s.peers[0].rxBytes == 0)
        let n = UInt64(DropReason.allCases.count)
        #expect(s.totalDrops == n * (n + 1) / 2 + 1000 * n)
    }

    @Test("traffic both ways shows in one reading")
    func bothDirectionsInOneReading() throws {
        let h = try Harness()
        let frame = arpRequest(from: localMAC)
        try h.egress([frame, Array(frame.prefix(8))])
        let inner = remoteFrame()
        let packet = h.tunnelPacket(inner, from: peer4a)
        try h.ingress([(packet, peer4a), (packet, stranger4)])

        let s = h.statistics
        let outer = UInt64(h.configuration.ipOverhead + frame.count)
        #expect(s.counter(.tapReceivedFrames) == 2)
        #expect(s.counter(.sentPackets) == 2)
        #expect(s.counter(.sentBytes) == 2 * outer)
        #expect(s.counter(.receivedPackets) == 2)
        let received = UInt64(packet.count + Variant.vxlan4.strippedHeaderBytes)
        #expect(s.counter(.receivedBytes) == 2 * received)
        #expect(s.counter(.tapWrittenFrames) == 1)
        #expect(s.counter(.fdbLearned) == 1)
        #expect(s.drops(.runtFrame) == 1)
        #expect(s.drops(.unknownPeer) == 1)
        #expect(s.totalDrops == 2)
        #expect(s.fdbEntries == 1)
        #expect(s.peers[0].txPackets == 1 && s.peers[0].rxPackets == 1)
        #expect(s.peers[0].txBytes == outer && s.peers[0].rxBytes == received)
        #expect(s.peers[1].txPackets == 1 && s.peers[1].rxPackets == 0)
    }

    @Test("drops are also read per direction, and the two directions add up to the totals")
    func dropsPerDirection() throws {
        let h = try Harness()
        let frame = arpRequest(from: localMAC)
        try h.egress([frame, Array(frame.prefix(8)), Array(frame.prefix(4))])
        let packet = h.tunnelPacket(remoteFrame(), from: peer4a)
        try h.ingress([(packet, stranger4), (packet, peer4a)])
        let s = h.statistics
        let byDirection = try #require(s.directionDrops)
        #expect(byDirection["egress"] == ["runt_frame": 2])
        #expect(byDirection["ingress"] == ["unknown_peer": 1])
        for r in DropReason.allCases {
            #expect((byDirection["egress"]?[r.name] ?? 0) + (byDirection["ingress"]?[r.name] ?? 0) == s.drops(r), "\(r)")
        }
    }

    @Test("each step counts its batch in a power-of-two bucket of its own direction, and the frames in the sum")
    func batchSizes() throws {
        let h = try Harness()
        let frame = arpRequest(from: localMAC)
        try h.egress([frame])
        try h.egress(Array(repeating: frame, count: 3))
        try h.egress(Array(repeating: frame, count: 3))
        let packet = h.tunnelPacket(remoteFrame(), from: peer4a)
        try h.ingress(Array(repeating: (packet, peer4a), count: 5))
        let w = try #require(h.statistics.workers.first)
        let egress = try #require(w.egressBatches), ingress = try #require(w.ingressBatches)
        #expect(egress.counts.count == BatchSizeBuckets.count + 1)
        // One batch of 1 (le 1), two of 3 (le 4); one of 5 (le 8).
        #expect(egress.counts == [1, 0, 2] + Array(repeating: 0, count: BatchSizeBuckets.count - 2))
        #expect(egress.frames == 7 && egress.batches == 3)
        #expect(ingress.counts == [0, 0, 0, 1] + Array(repeating: 0, count: BatchSizeBuckets.count - 3))
        #expect(ingress.frames == 5 && ingress.batches == 1)
    }

    @Test("a batch's bucket is the first power-of-two bound at or above its size; above 512, the overflow slot")
    func batchBuckets() {
        #expect(BatchSizeBuckets.bounds == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
        let expected = [1: 0, 2: 1, 3: 2, 4: 2, 5: 3, 8: 3, 9: 4, 64: 6, 65: 7, 511: 9, 512: 9, 513: 10, 100_000: 10]
        for (frames, slot) in expected { #expect(BatchSizeBuckets.slot(frames: frames) == slot, "\(frames) frames") }
        for frames in 1...1024 {
            let slot = BatchSizeBuckets.slot(frames: frames)
            if slot < BatchSizeBuckets.count {
                #expect(frames <= BatchSizeBuckets.bounds[slot] && (slot == 0 || frames > BatchSizeBuckets.bounds[slot - 1]))
            } else {
                #expect(frames > BatchSizeBuckets.bounds.last!)
            }
        }
    }

    @Test("a reading survives JSON, as the control socket sends it")
    func jsonRoundTrip() throws {
        let h = try Harness()
        try h.egress(arpRequest(from: localMAC))
        try h.receive(remoteFrame(), from: peer4b)
        let s = h.statistics
        let decoded = try JSONDecoder().decode(Statistics.self, from: JSONEncoder().encode(s))
        #expect(decoded == s)
        let entries = h.worker.state.forwardingEntries()
        #expect(try JSONDecoder().decode([FDBEntry].self, from: JSONEncoder().encode(entries)) == entries)
    }
}
