// Several workers, each with its own TAP queue and transport, share one ForwardingState: what
// one worker learns, another forwards by; counters add up over the workers; each worker
// writes outer headers with its own template.

import FerryEngine
import FerryLinux
import FerryTestSupport
import FerryWire
import Foundation
import Synchronization
import Testing

/// `count` workers over fakes sharing one state, as `Engine` builds them over TAP queues.
struct Workers {
    let state: ForwardingState
    let workers: [TestWorker]
    let devices: [FakeDevice]
    let transports: [FakeTransport]

    init(_ count: Int, variant: Variant = .vxlan4, configure: (inout EngineConfiguration) -> Void = { _ in }) throws {
        var c = EngineConfiguration(encapsulation: variant.encapsulation, local: variant.local,
                                    peers: [variant.peerA, variant.peerB], underlayMTU: 1500)
        configure(&c)
        state = try ForwardingState(configuration: c, workers: count)
        devices = (0..<count).map { _ in FakeDevice() }
        transports = (0..<count).map { _ in FakeTransport(receivedForm: variant.receivedForm) }
        var made: [TestWorker] = []
        for w in 0..<count {
            made.append(try Worker(configuration: c, device: devices[w], transport: transports[w], deviceMAC: tapMAC,
                                      state: state, index: w))
        }
        workers = made
    }

    func receive(on w: Int, _ inner: [UInt8], from peer: IPAddress, variant: Variant = .vxlan4) throws {
        transports[w].incoming.append((peerPacket(inner, from: peer, to: variant.local, encapsulation: variant.encapsulation,
                                                  form: variant.receivedForm), peer, 49152))
        _ = try workers[w].ingressStep()
    }

    func send(on w: Int, _ frame: [UInt8]) throws {
        devices[w].pending.append(frame)
        _ = try workers[w].egressStep()
    }
}

@Suite("Workers: one state, several TAP queues and sockets")
struct WorkerTests {
    @Test("a MAC learned by one worker's ingress steers another worker's egress")
    func learningIsShared() throws {
        let w = try Workers(2)
        try w.receive(on: 1, remoteFrame(from: remoteMAC), from: peer4b)
        // Worker 0 has never seen remoteMAC itself, yet sends to .3 only, not to both peers.
        try w.send(on: 0, udpFrame(to: remoteMAC))
        #expect(w.transports[0].sent.map(\.destination) == [peer4b])
        #expect(w.transports[1].sent.isEmpty)
        #expect(w.workers[0].state.statistics().counter(.unicastFrames) == 1)
        #expect(w.workers[0].state.statistics().counter(.floodedFrames) == 0)
    }

    @Test("counters are summed over the workers, and each worker's share is reported")
    func countersAddUp() throws {
        let w = try Workers(3)
        try w.send(on: 0, udpFrame())
        try w.send(on: 2, udpFrame())
        try w.send(on: 2, udpFrame())
        try w.receive(on: 1, remoteFrame(), from: peer4a)
        // Any worker's statistics() covers them all.
        for f in w.workers {
            let s = f.state.statistics()
            #expect(s.counter(.tapReceivedFrames) == 3)
            #expect(s.counter(.sentPackets) == 6)  // each broadcast frame to both peers
            #expect(s.counter(.receivedPackets) == 1)
            #expect(s.peers.first { $0.address == peer4a.description }?.txPackets == 3)
            #expect(s.peers.first { $0.address == peer4a.description }?.rxPackets == 1)
            #expect(s.workers.map(\.tapRxFrames) == [1, 0, 2])
            #expect(s.workers.map(\.sentPackets) == [2, 0, 4])
            #expect(s.workers.map(\.receivedPackets) == [0, 1, 0])
            #expect(s.workers.map(\.tapTxFrames) == [0, 1, 0])
        }
    }

    @Test("a peer that two workers hear from is learned once (concurrent adds: PeerTableTests)",
          arguments: [Variant.vxlan4, .gre4])
    func learnedPeerOnce(variant: Variant) throws {
        let w = try Workers(2, variant: variant) { $0.acceptAnyPeer = true; $0.peers = [] }
        try w.receive(on: 0, remoteFrame(from: remoteMAC), from: variant.stranger, variant: variant)
        try w.receive(on: 1, remoteFrame(from: otherRemoteMAC), from: variant.stranger, variant: variant)
        #expect(w.state.peers.count == 1)
        let s = w.workers[1].state.statistics()
        #expect(s.counter(.peersLearned) == 1)
        #expect(s.peers.map(\.rxPackets) == [2])
        // Both workers can now reach it, each with a template of its own.
        try w.send(on: 1, udpFrame(to: remoteMAC))
        #expect(w.transports[1].sent.map(\.destination) == [variant.stranger])
        #expect(w.state.peers[0].templates.count == 2)
        #expect(w.state.peers[0].templates[0] !== w.state.peers[0].templates[1])
    }

    @Test("each worker numbers its own IPv4 IDs: two workers never share a counter")
    func templatesPerWorker() throws {
        let w = try Workers(2)
        for _ in 0..<3 {
            try w.send(on: 0, udpFrame(to: .broadcast))
        }
        try w.send(on: 1, udpFrame(to: .broadcast))
        func ids(_ t: FakeTransport) -> [UInt16] { t.sent.filter { $0.destination == peer4a }.map { u16($0.bytes, 4) } }
        let first = ids(w.transports[0]), second = ids(w.transports[1])
        #expect(first.count == 3 && second.count == 1)
        // Worker 0's IDs count up by one per packet to that peer; worker 1's did not advance them.
        #expect(first[1] == (first[0] == 0xFFFF ? 1 : first[0] + 1))
        #expect(first[2] == (first[1] == 0xFFFF ? 1 : first[1] + 1))
        try w.send(on: 0, udpFrame(to: .broadcast))
        #expect(ids(w.transports[0]).last == (first[2] == 0xFFFF ? 1 : first[2] + 1))
    }
}

@Suite("Peer table")
struct PeerTableTests {
    @Test("adding an address already present returns its slot and adds nothing")
    func addIsIdempotent() throws {
        let table = PeerTable(capacity: 4)
        let options = try TunnelOptions(encapsulation: .vxlan(vni: 1), local: local4, remote: peer4a)
        #expect(table.add(Peer(options: options, isLearned: true, workers: 2)).map { [$0.index, $0.added ? 1 : 0] } == [0, 1])
        #expect(table.add(Peer(options: options, isLearned: true, workers: 2)).map { [$0.index, $0.added ? 1 : 0] } == [0, 0])
        #expect(table.count == 1)
        let other = try TunnelOptions(encapsulation: .vxlan(vni: 1), local: local4, remote: peer4b)
        #expect(table.add(Peer(options: other, isLearned: true))?.index == 1)
        #expect(table.count == 2)
    }

    @Test("two threads adding one address at once make one peer, and one of them says so")
    func concurrentAdds() throws {
        let options = try TunnelOptions(encapsulation: .vxlan(vni: 1), local: local4, remote: peer4a)
        for _ in 0..<200 {
            let table = PeerTable(capacity: 4)
            let added = EngineMutex(0)
            DispatchQueue.concurrentPerform(iterations: 2) { _ in
                if table.add(Peer(options: options, isLearned: true, workers: 2))?.added == true { added.withLock { $0 += 1 } }
            }
            #expect(table.count == 1)
            #expect(added.withLock { $0 } == 1)
        }
    }

    @Test("workers' templates to one peer count IPv4 IDs in disjoint ranges")
    func identificationRanges() throws {
        let options = try TunnelOptions(encapsulation: .gre(GREOptions(key: 1)), local: local4, remote: peer4a)
        let peer = Peer(options: options, isLearned: false, workers: 3)
        let inner = udpFrame()
        var seen: [Set<UInt16>] = []
        for t in peer.templates {
            var ids = Set<UInt16>()
            var header = [UInt8](repeating: 0, count: 128)
            for _ in 0..<30_000 {
                header.withUnsafeMutableBytes { h in inner.withUnsafeBytes { _ = t.writeHeaders(.ipPacket, to: h.baseAddress!, inner: $0) } }
                ids.insert(u16(header, 4))
            }
            #expect(!ids.contains(0))
            seen.append(ids)
        }
        // 30,000 IDs each, more than a third of the space: ranges that overlapped would show.
        #expect(seen[0].isDisjoint(with: seen[1]) && seen[1].isDisjoint(with: seen[2]) && seen[0].isDisjoint(with: seen[2]))
    }
}
