// Captures attached and detached at run time: each gets what its point and filter keep, from
// the worker's next step; each loses only its own records when its reader falls behind; drops
// come with their reason, direction and peer; and attaching and detaching while a worker runs
// is safe (the TSan run checks the publication).

import FerryCapture
@testable import FerryEngine
import FerryLinux
import FerryTestSupport
import FerryWire
import Foundation
import Synchronization
import Testing

@Suite("Capture hub")
struct CaptureHubTests {
    static func drained(_ capture: CaptureAttachment) -> [CaptureRecordCopy] {
        var out: [CaptureRecordCopy] = []
        capture.drain { out.append(CaptureRecordCopy($0)) }
        return out
    }

    @Test("captures attached at run time each get what their point and filter keep; a detached one gets nothing more")
    func attachDetach() throws {
        let h = try Harness()
        let hub = h.worker.state.captures
        #expect(h.worker.captures == nil, "nothing attached: the worker holds nil")
        let udp = try #require(hub.attach(point: .inner, filter: try PacketFilter(expression: "udp")))
        let arp = try #require(hub.attach(point: .inner, filter: try PacketFilter(expression: "arp")))
        let frames = [udpFrame(to: remoteMAC, seed: 1), arpRequest(from: localMAC)]
        try h.egress(frames)
        #expect(Self.drained(udp).map(\.bytes) == [frames[0]])
        #expect(Self.drained(arp).map(\.bytes) == [frames[1]])
        let version = hub.detach(udp)
        try h.egress(frames)
        #expect(hub.workersHaveSeen(version))
        #expect(Self.drained(udp).isEmpty, "a detached capture got records")
        #expect(Self.drained(arp).map(\.bytes) == [frames[1]])
        hub.detach(arp)
        try h.egress(frames)
        #expect(h.worker.captures == nil)
        #expect(h.counter(.tapReceivedFrames) == 6)
    }

    @Test("a reader that falls behind loses its own records, counted on its capture; the others and forwarding lose none")
    func perCaptureLoss() throws {
        let h = try Harness()
        let hub = h.worker.state.captures
        let slow = try #require(hub.attach(point: .inner, filter: nil, ringBytes: 4096))
        let fast = try #require(hub.attach(point: .inner, filter: nil, ringBytes: 1 << 20))
        var kept = 0
        for round in 0..<10 {
            try h.egress((0..<10).map { udpFrame(to: remoteMAC, length: 200, seed: UInt8(round * 10 + $0)) })
            kept += Self.drained(fast).count
        }
        #expect(kept == 100 && fast.dropped == 0)
        // 4 KiB: sixteen 248-byte records fit; the rest of the 100 are lost, and counted.
        #expect(slow.dropped == 100 - 4096 / 248)
        #expect(Self.drained(slow).count == 4096 / 248)
        #expect(h.counter(.tapReceivedFrames) == 100 && h.drops(.runtFrame) == 0)
    }

    @Test("drops are recorded with reason, direction and peer: egress as read from the TAP, ingress in outer form")
    func dropsAsPackets() throws {
        let h = try Harness()
        let drops = try #require(h.worker.state.captures.attach(point: .drops, filter: nil))
        let runt = [UInt8](repeating: 0xAB, count: 10)
        try h.egress([runt, udpFrame(to: remoteMAC, seed: 3)])
        let wrongVNI = h.tunnelPacket(remoteFrame(), from: peer4a, encapsulation: .vxlan(vni: 7))
        try h.ingress([(wrongVNI, peer4a), (h.tunnelPacket(remoteFrame(), from: stranger4), stranger4)])
        let records = Self.drained(drops)
        #expect(records.map(\.drop) == [.runtFrame, .unexpectedVNI, .unknownPeer])
        #expect(records.map(\.direction) == [.egress, .ingress, .ingress])
        #expect(records.map(\.peer) == [nil, peer4a, stranger4])
        #expect(records[0].bytes == runt)
        #expect(records[1].comment == "drop unexpected_vni peer=10.99.0.2 worker=0 direction=ingress")
        // The outer form: Ethernet, IPv4 from the peer, UDP to the tunnel port, then the VXLAN packet as received.
        let outer = records[1].bytes
        #expect(u16(outer, 12) == 0x0800 && ipv4(outer, 26) == IPv4Address(10, 99, 0, 2) && u16(outer, 36) == 4789)
        #expect(Array(outer[42...]) == wrongVNI)
        #expect(h.drops(.runtFrame) == 1 && h.drops(.unexpectedVNI) == 1 && h.drops(.unknownPeer) == 1)
        // Only drops: nothing forwarded or delivered is recorded.
        #expect(h.counter(.tapReceivedFrames) == 2)
    }

    @Test("an outer capture attached under UDP GSO records each datagram as the wire carries it; the sends stay GSO")
    func outerCaptureUnderGSO() throws {
        let c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: .v4(IPv4Address(10, 99, 0, 1)), peers: [peer4a],
                                    underlayMTU: 1500)
        let device = FakeDevice()
        device.virtioHeader = true
        let transport = udpTransport()
        let worker = try TestWorker(configuration: c, limits: DataPathLimits(configuration: c, maximumFrame: 65535 + 28),
                                    device: device, transport: transport, deviceMAC: tapMAC)
        let capture = try #require(worker.state.captures.attach(point: .both, filter: nil))
        let mss = 1410, payload = 20 * 1410 + 300
        device.pending = [VirtioTests.superFrame(payload: payload, mss: mss)]
        _ = try worker.egressStep()
        #expect(transport.sent.allSatisfy { $0.segmentSize == 8 + 54 + mss }, "the sends are GSO as without a capture")
        let records = Self.drained(capture)
        let inner = records.filter { $0.point == .inner }.map(\.bytes)
        let outer = records.filter { $0.point == .outer }.map(\.bytes)
        #expect(inner.count == 21 && outer.count == 21, "one record per segment at each point")
        let decapsulated = try outer.map { packet in
            #expect(u16(packet, 12) == 0x0800 && ipv4(packet, 26) == IPv4Address(10, 99, 0, 1) && ipv4(packet, 30) == IPv4Address(10, 99, 0, 2))
            #expect(Int(u16(packet, 16)) == packet.count - 14, "the IP total length is the datagram's")
            let ip = Array(packet[14...])
            let result = ip.withUnsafeBytes { Decapsulator().decapsulate(ipPacket: $0) }
            return Array(ip[try #require(result.packet).inner])
        }
        #expect(decapsulated == inner, "outer records decapsulate to the inner ones")
        // The datagrams are what the kernel is handed: the GSO sends cut at their segment size.
        let wire = transport.sent.flatMap { send in
            stride(from: 0, to: send.bytes.count, by: send.segmentSize!).map { Array(send.bytes[$0..<min($0 + send.segmentSize!, send.bytes.count)]) }
        }
        #expect(outer.map { Array($0[42...]) } == wire)
    }

    @Test("attaching and detaching while a worker runs: every record passes its capture's filter, none comes after the detach settled")
    func attachWhileRunning() throws {
        let box = HarnessBox(try Harness())
        let h = box.harness
        let hub = h.worker.state.captures
        let running = Atomic<Bool>(true)
        let steps = Atomic<Int>(0)
        let worker = Thread {
            let h = box.harness
            var k = 0
            while running.load(ordering: .acquiring) {
                h.device.pending = [udpFrame(to: remoteMAC, seed: UInt8(truncatingIfNeeded: k)), arpRequest(from: localMAC)]
                _ = try? h.worker.egressStep()
                h.transport.sent.removeAll()
                steps.add(1, ordering: .releasing)
                k += 1
                usleep(100)
            }
        }
        worker.start()
        defer { running.store(false, ordering: .releasing) }
        let filters = ["udp", "arp"]
        for round in 0..<50 {
            let expression = filters[round % 2]
            let capture = try #require(hub.attach(point: .inner, filter: try PacketFilter(expression: expression)))
            let start = steps.load(ordering: .acquiring)
            while steps.load(ordering: .acquiring) < start + 3 { usleep(50) }
            let version = hub.detach(capture)
            let deadline = Date().addingTimeInterval(10)
            while !hub.workersHaveSeen(version) && Date() < deadline { usleep(50) }
            #expect(hub.workersHaveSeen(version))
            let records = Self.drained(capture)
            #expect(!records.isEmpty, "round \(round): nothing captured over three steps")
            let etherType: UInt16 = expression == "udp" ? 0x0800 : 0x0806
            #expect(records.allSatisfy { u16($0.bytes, 12) == etherType }, "round \(round): a record its filter refuses")
            let after = steps.load(ordering: .acquiring)
            while steps.load(ordering: .acquiring) < after + 2 { usleep(50) }
            #expect(Self.drained(capture).isEmpty, "round \(round): records after the detach settled")
        }
        running.store(false, ordering: .releasing)
    }
}

/// A harness handed to the thread that plays its worker (which alone touches it meanwhile).
final class HarnessBox: @unchecked Sendable {
    let harness: Harness
    init(_ harness: Harness) { self.harness = harness }
}

/// A drained record, owned.
struct CaptureRecordCopy {
    var bytes: [UInt8]
    var point: CapturePoint
    var drop: DropReason?
    var direction: CounterDirection?
    var peer: IPAddress?
    var comment: String?

    init(_ r: CaptureRecord) {
        bytes = Array(r.bytes)
        point = r.point
        drop = r.drop
        direction = r.direction
        peer = r.peer
        comment = r.comment
    }
}
