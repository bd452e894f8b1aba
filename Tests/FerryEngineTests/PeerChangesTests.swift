// The engine's API for change at run time (`ForwardingState+Changes.swift`): configured peers
// added and removed while workers run, their forwarding entries, floods, slots and memory;
// static entries; the ageing time. Workers over fakes, driven step by step.

import FerryEngine
import FerryLinux
import FerryTestSupport
import FerryWire
import Foundation
import Testing

/// `count` workers over fakes sharing one state, configured with `peers`.
private func workers(_ count: Int, peers: [IPAddress], configure: (inout EngineConfiguration) -> Void = { _ in })
    throws -> [TestWorker] {
    var c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: local4, peers: peers, underlayMTU: 1500)
    configure(&c)
    let clock = TestClock()
    let state = try ForwardingState(configuration: c, workers: count, clock: { clock.now })
    return try (0..<count).map { w in
        try Worker(configuration: c, device: FakeDevice(), transport: FakeTransport(receivedForm: .vxlanPayload),
                   deviceMAC: tapMAC, state: state, index: w)
    }
}

/// Where worker `w`'s sends of its last step went, and forgets them.
private func sent(_ w: TestWorker) -> Set<IPAddress?> {
    defer { w.transport.sent.removeAll() }
    return Set(w.transport.sent.map(\.destination))
}

private let peer4c = IPAddress.v4(IPv4Address(10, 99, 0, 4))

@Suite("Peer changes at run time")
struct PeerChangesTests {
    @Test("a peer added at run time gets floods and unicast from the next batch, its packets are let in, and it has a template per worker")
    func addedPeerIsAPeer() throws {
        let h = try Harness(peers: [peer4a])
        try h.receive(remoteFrame(from: remoteMAC), from: peer4b)
        #expect(h.drops(.unknownPeer) == 1, "not a peer yet")

        #expect(try h.worker.state.addPeer(peer4b) == .added(slot: 1))
        try h.egress(udpFrame(to: .broadcast))
        #expect(Set(h.sentTo) == [peer4a, peer4b], "the flood goes to the new peer too")
        h.transport.sent.removeAll()

        #expect(try h.receive(remoteFrame(from: remoteMAC), from: peer4b) == 1)
        #expect(h.drops(.unknownPeer) == 1, "its packets are let in now")
        #expect(h.device.written.count == 1)
        #expect(h.entry(for: remoteMAC)?.peer == peer4b.description)
        try h.egress(udpFrame(to: remoteMAC))
        #expect(h.sentTo == [peer4b], "unicast to what was learned behind it")
        let listed = try #require(h.peerStatistics(peer4b))
        #expect(!listed.learned && listed.txPackets == 2 && listed.rxPackets == 1)

        let w = try workers(3, peers: [peer4a])
        try w[0].state.addPeer(peer4b)
        #expect(w[0].peers.all.map { $0.templates.count } == [3, 3], "one template per worker, as a peer given at start")
    }

    @Test("a removed peer gets no flood nor unicast, its learned and static entries go with it, and its packets are refused")
    func removedPeerIsGone() throws {
        let h = try Harness(peers: [peer4a, peer4b]) { $0.staticEntries = [(otherRemoteMAC, peer4b)] }
        let state = h.worker.state
        try h.receive(remoteFrame(from: remoteMAC), from: peer4b)
        #expect(state.forwardingEntries().count == 2)

        let removal = try state.removePeer(peer4b)
        #expect(removal.slot == 1 && removal.entriesRemoved == 2, "the learned entry and the static one")
        #expect(state.forwardingEntries().isEmpty)
        #expect(h.statistics.peers.map(\.address) == [peer4a.description], "statistics list it no more")

        try h.egress([udpFrame(to: .broadcast), udpFrame(to: remoteMAC), udpFrame(to: otherRemoteMAC)])
        #expect(h.sentTo == [peer4a, peer4a, peer4a], "floods to the peer that stays, none to the removed one")
        #expect(h.counter(.floodedFrames) == 3)

        try h.receive(remoteFrame(from: remoteMAC), from: peer4b)
        #expect(h.drops(.unknownPeer) == 1, "from a removed peer: unknown")
        #expect(h.entry(for: remoteMAC) == nil, "nothing learned behind it")
        #expect(h.device.written.count == 1, "only the frame from before the removal")
    }

    @Test("a removed peer is freed only after every worker's next quiescent point, and its slot given again only after that")
    func removalWaitsForQuiescence() throws {
        let w = try workers(2, peers: [peer4a, peer4b])
        let state = w[0].state, peers = state.peers
        for f in w { _ = try f.egressStep() }  // both online
        let removed = WeakPeer(peers[1])
        try state.removePeer(peer4b)
        state.settlePeerChanges()
        #expect(removed.peer != nil, "no worker has passed a quiescent point since")
        #expect(peers.vacantSlots == 1)
        #expect(try state.addPeer(peer4c) == .added(slot: 2), "the slot is not given while a worker may hold its index")

        _ = try w[0].egressStep()
        state.settlePeerChanges()
        #expect(removed.peer != nil, "worker 1 may still hold it")
        _ = try w[1].ingressStep()
        state.settlePeerChanges()
        #expect(removed.peer == nil, "freed: every worker passed a quiescent point")

        try state.removePeer(peer4c)
        #expect(peers.vacantSlots == 2)
        try state.addPeer(peer4b)
        #expect(peers.all.firstIndex { $0.address == peer4b && !$0.isVacant } == 1, "the settled slot is given again")
        #expect(peers.vacantSlots == 1)
        #expect(state.statistics().peers.map(\.address) == [peer4a, peer4b].map(\.description))
    }

    @Test("an entry learned behind a removed peer's slot by a step in progress is cleared before the slot is given again")
    func staleLearningCleared() throws {
        let w = try workers(1, peers: [peer4a, peer4b])
        let state = w[0].state
        _ = try w[0].egressStep()
        try state.removePeer(peer4b)
        // What a step that found peer 4b's slot before the removal learns after it.
        let learned = state.fdb.withLock { $0.learn(remoteMAC, peer: 1, now: state.clock()) }
        #expect(learned == .learned)
        state.settlePeerChanges()
        #expect(state.forwardingEntries().count == 1, "the worker has not passed a quiescent point: kept for now")
        _ = try w[0].egressStep()
        state.settlePeerChanges()
        #expect(state.forwardingEntries().isEmpty, "cleared once no step can hold the slot")
        try state.addPeer(peer4c)
        #expect(state.peers.all[1].address == peer4c)
        w[0].device.pending = [udpFrame(to: remoteMAC)]
        _ = try w[0].egressStep()
        #expect(sent(w[0]) == [peer4a, peer4c], "flooded: the newcomer did not inherit the removed peer's MAC")
    }

    @Test("a step in progress at the removal sends to the removed address at most until its end, never to a freed peer")
    func stepInProgressAtRemoval() throws {
        let h = try Harness(peers: [peer4a, peer4b])
        let state = h.worker.state
        try h.receive(remoteFrame(from: remoteMAC), from: peer4b)
        // The removal lands between a batch's lookups and its sends: the refusal hook runs
        // inside the send, so the next frame's lookup has already been made.
        var removedDuringSend = false
        h.transport.refuse = { _, _ in
            if !removedDuringSend {
                removedDuringSend = true
                _ = try? state.removePeer(peer4b)
            }
            return nil
        }
        try h.egress([udpFrame(to: remoteMAC)])
        #expect(removedDuringSend)
        #expect(h.sentTo == [peer4b], "sent as it was looked up")
        h.transport.sent.removeAll()
        try h.egress([udpFrame(to: remoteMAC), udpFrame(to: .broadcast)])
        #expect(h.sentTo == [peer4a, peer4a], "the next batch floods to the peer that stays")
    }

    @Test("static entries are set and removed at run time; the removed peer's static entries go with it")
    func staticEntries() throws {
        let h = try Harness(peers: [peer4a, peer4b])
        let state = h.worker.state
        #expect(try state.setStaticEntry(remoteMAC, peer: peer4b) == nil)
        #expect(state.staticEntries.map(\.mac) == [remoteMAC])
        try h.receive(remoteFrame(from: remoteMAC), from: peer4a)
        #expect(h.entry(for: remoteMAC)?.peer == peer4b.description, "learning does not move a static entry")
        try h.egress(udpFrame(to: remoteMAC))
        #expect(h.sentTo == [peer4b])

        #expect(throws: PeerChangeError.unknownPeer(stranger4)) { try state.setStaticEntry(otherRemoteMAC, peer: stranger4) }
        #expect(throws: PeerChangeError.localMAC(.broadcast)) { try state.setStaticEntry(.broadcast, peer: peer4a) }
        #expect(try state.removeEntry(remoteMAC).isStatic)
        #expect(throws: PeerChangeError.notAnEntry(remoteMAC)) { try state.removeEntry(remoteMAC) }

        try state.setStaticEntry(otherRemoteMAC, peer: peer4b)
        try state.removePeer(peer4b)
        #expect(state.staticEntries.isEmpty)
        #expect(throws: PeerChangeError.unknownPeer(peer4b)) { try state.setStaticEntry(otherRemoteMAC, peer: peer4b) }
    }

    @Test("a shorter ageing time ages entries from the next batch")
    func ageingChange() throws {
        let h = try Harness { $0.ageingSeconds = 300 }
        try h.receive(remoteFrame(from: remoteMAC), from: peer4b)
        h.clock.advance(by: 20)
        #expect(h.entry(for: remoteMAC) != nil)
        try h.worker.state.setAgeing(10)
        #expect(h.worker.state.ageingSeconds == 10)
        #expect(h.entry(for: remoteMAC) == nil, "20 s old, past the new ageing time")
        try h.egress(udpFrame(to: remoteMAC))
        #expect(Set(h.sentTo) == [peer4a, peer4b], "flooded: the entry aged out")
        #expect(throws: PeerChangeError.ageing(0)) { try h.worker.state.setAgeing(0) }
    }

    @Test("refusals: a peer already there, this host, another IP version, a multicast address, no such peer, a full table")
    func refusals() throws {
        let h = try Harness(peers: [peer4a]) { $0.maximumPeers = 2 }
        let state = h.worker.state
        #expect(throws: PeerChangeError.alreadyPeer(peer4a)) { try state.addPeer(peer4a) }
        #expect(throws: PeerChangeError.peerIsLocal(local4)) { try state.addPeer(local4) }
        #expect(throws: PeerChangeError.addressFamily(peer: peer6a, local: local4)) { try state.addPeer(peer6a) }
        let multicast = IPAddress.v4(IPv4Address(239, 1, 1, 1))
        #expect(throws: PeerChangeError.notUnicast(multicast)) { try state.addPeer(multicast) }
        #expect(throws: PeerChangeError.unknownPeer(peer4b)) { try state.removePeer(peer4b) }
        try state.addPeer(peer4b)
        #expect(throws: PeerChangeError.tableFull(capacity: 2, waiting: 0)) { try state.addPeer(peer4c) }
        try state.removePeer(peer4b)
        #expect(throws: PeerChangeError.tableFull(capacity: 2, waiting: 1)) { try state.addPeer(peer4c) }
        #expect(PeerChangeError.tableFull(capacity: 2, waiting: 1).description.contains("try again"))
        _ = try h.egress(udpFrame())
        state.settlePeerChanges()
        #expect(try state.addPeer(peer4c) == .added(slot: 1))
    }

    @Test("adding a learned peer makes it a configured one in its slot, keeping what was learned behind it")
    func learnedPeerPromoted() throws {
        let h = try Harness(peers: []) { $0.acceptAnyPeer = true }
        let state = h.worker.state
        try h.receive(remoteFrame(from: remoteMAC), from: peer4b)
        #expect(state.peers.all.map(\.isLearned) == [true])
        #expect(throws: PeerChangeError.learnedPeer(peer4b)) { try state.removePeer(peer4b) }
        #expect(try state.addPeer(peer4b) == .promoted(slot: 0))
        #expect(state.peers.all.map(\.isLearned) == [false])
        #expect(h.entry(for: remoteMAC)?.peer == peer4b.description)
        let listed = try #require(h.peerStatistics(peer4b))
        #expect(!listed.learned && listed.rxPackets == 1, "its counters go on")
        #expect(throws: PeerChangeError.alreadyPeer(peer4b)) { try state.addPeer(peer4b) }
        try state.removePeer(peer4b)
        #expect(state.statistics().peers.isEmpty)
    }

    @Test("differences only a restart applies are named; peers, static entries and ageing are not among them")
    func restartDifferences() {
        let a = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: local4, peers: [peer4a])
        var b = a
        b.peers = [peer4b]
        b.ageingSeconds = 10
        b.staticEntries = [(remoteMAC, peer4b)]
        #expect(a.differencesNeedingRestart(b).isEmpty)
        b.encapsulation = .vxlan(vni: 43)
        b.destinationPort = 4790
        let named = a.differencesNeedingRestart(b)
        #expect(named.count == 2)
        #expect(named.contains { $0.hasPrefix("encapsulation:") && $0.contains("43") })
        #expect(named.contains("dstport: 4789 -> 4790"))
    }
}

@Suite("Peer changes at run time, under load")
struct PeerChangeChurnTests {
    /// Workers on their own threads receive from a pool of addresses (learning their MACs when
    /// they are peers), flood and unicast, and pass quiescent points (going offline now and then,
    /// as around poll), while another thread adds and removes those addresses as configured
    /// peers, hundreds of times, and settles. A reclaimed peer's destinations are overwritten:
    /// a worker still sending from it would send to 0.0.0.0 (and under TSan the hook's write
    /// races with the worker's read). At the end, every MAC in the table sits behind the slot
    /// of the address that sent it: nothing learned behind a removed peer's slot outlived the
    /// slot's being given to another.
    @Test("configured peers added and removed while workers forward: never sent to once freed, no MAC left behind the wrong peer")
    func churn() throws {
        let pool = (0..<6).map { IPAddress.v4(IPv4Address(10, 99, 0, UInt8(10 + $0))) }
        let w = try workers(2, peers: [peer4a]) { $0.maximumPeers = 5 }
        let state = w[0].state, peers = state.peers
        let poison = IPAddress.v4(IPv4Address(0, 0, 0, 0))
        let reclaimed = SharedCount(), sentToReclaimed = SharedCount(), sent = SharedCount()
        peers.willReclaim = { peer in
            peer.destination.pointee = SocketAddress(poison, port: 0)
            peer.udpDestination.pointee = SocketAddress(poison, port: 0)
            reclaimed.add()
        }
        for f in w {
            f.transport.refuse = { _, destination in
                if destination == poison { sentToReclaimed.add() }
                sent.add()
                return nil
            }
        }
        let packets = pool.enumerated().map { k, address in
            peerPacket(remoteFrame(from: numberedMAC(k + 1), seed: UInt8(k)), from: address, to: local4,
                       encapsulation: .vxlan(vni: 42), form: .vxlanPayload)
        }
        let running = SharedCount(w.count)
        let finished = DispatchGroup()
        let failures = Shared<[String]>([])
        func spawn(_ body: @escaping @Sendable () throws -> Void) {
            finished.enter()
            Thread {
                defer { finished.leave() }
                do { try body() } catch { failures.withLock { $0.append("\(error)") } }
            }.start()
        }
        for f in w {
            spawn {
                defer { running.add(-1) }
                for round in 0..<1500 {
                    let k = (round + f.index) % pool.count
                    f.transport.incoming.append((packets[k], pool[k], 4789))
                    _ = try f.ingressStep()
                    f.device.pending += [udpFrame(seed: UInt8(truncatingIfNeeded: round)), udpFrame(to: numberedMAC(k + 1))]
                    _ = try f.egressStep()
                    f.transport.sent.removeAll(keepingCapacity: true)
                    f.device.written.removeAll(keepingCapacity: true)
                    if round % 16 == f.index {
                        peers.goOffline(worker: f.index)
                        Thread.sleep(forTimeInterval: 0.0002)
                    }
                }
                peers.goOffline(worker: f.index)
            }
        }
        let changes = SharedCount()
        spawn {
            var k = 0
            while running.now > 0 {
                let address = pool[k % pool.count]
                if (try? state.addPeer(address)) == nil { _ = try? state.removePeer(address) } else { changes.add() }
                if k % 3 == 0 { _ = try? state.removePeer(pool[(k + 2) % pool.count]) }
                state.settlePeerChanges()
                k += 1
            }
        }
        finished.wait()
        #expect(failures.withLock { $0 } == [])

        state.settlePeerChanges()  // every worker offline: every removal settles
        #expect(peers.reclaim() == 0)
        let slots = peers.all
        for entry in state.forwardingEntries() {
            guard let k = (0..<pool.count).first(where: { numberedMAC($0 + 1).description == entry.mac }) else { continue }
            #expect(entry.peer == pool[k].description, "\(entry.mac), sent by \(pool[k]), sits behind \(entry.peer)")
        }
        #expect(slots.filter { !$0.isVacant }.allSatisfy { $0.address == peer4a || pool.contains($0.address) })
        print("configured-peer churn: \(changes.now) peers added, \(reclaimed.now) reclaimed, \(sent.now) packets sent")
        #expect(changes.now >= 50, "the churn churned")
        #expect(reclaimed.now >= 50)
        #expect(sentToReclaimed.now == 0, "a worker sent from a reclaimed peer")
    }
}
