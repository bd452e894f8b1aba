// Peers that leave their slots (accept-any mode, a full table, a retired peer's slot given to a
// newcomer) are freed by quiescent-state-based reclamation: only once every worker has passed
// a quiescent point (the top of a step) since, or is offline (waiting in poll); and always,
// eventually. Run under `swift test --sanitize=thread` as well: a peer freed while a worker
// still reads it is a race there.

import FerryEngine
import FerryLinux
import FerryTestSupport
import FerryWire
import Foundation
import Synchronization
import Testing

/// A reference that does not keep its object alive.
final class WeakPeer: @unchecked Sendable {
    weak var peer: Peer?
    init(_ peer: Peer) { self.peer = peer }
}

/// A count threads share (escaping closures cannot capture an `Atomic` itself).
final class SharedCount: Sendable {
    private let value = Atomic<Int>(0)
    init(_ start: Int = 0) { value.store(start, ordering: .relaxed) }
    func add(_ n: Int = 1) { value.add(n, ordering: .relaxed) }
    var now: Int { value.load(ordering: .relaxed) }
}

/// A value threads share under a lock.
final class Shared<Value: Sendable>: Sendable {
    private let value: EngineMutex<Value>
    init(_ value: Value) { self.value = EngineMutex(value) }
    func withLock<R>(_ body: (inout Value) -> R) -> R { value.withLock { body(&$0) } }
}

/// `count` accept-any workers over fakes sharing one state with `slots` peer slots, ageing
/// peers after `ageing` seconds of `clock`.
private func learningWorkers(_ count: Int, slots: Int, ageing: Int64, clock: TestClock) throws -> [TestWorker] {
    var c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: local4, peers: [], underlayMTU: 1500)
    c.acceptAnyPeer = true
    c.maximumPeers = slots
    c.ageingSeconds = ageing
    let state = try ForwardingState(configuration: c, workers: count, clock: { clock.now })
    return try (0..<count).map { w in
        try Worker(configuration: c, device: FakeDevice(), transport: FakeTransport(receivedForm: .vxlanPayload),
                   deviceMAC: tapMAC, state: state, index: w)
    }
}

/// Source `n` of the churn: 10.77.x.y, and the tunnel packet it sends (a frame from its own MAC).
private func churnSource(_ n: Int) -> (address: IPAddress, packet: [UInt8]) {
    let address = IPAddress.v4(IPv4Address(10, 77, UInt8(n >> 8), UInt8(n & 0xFF)))
    let inner = remoteFrame(from: numberedMAC(n + 1), seed: UInt8(truncatingIfNeeded: n))
    return (address, peerPacket(inner, from: address, to: local4, encapsulation: .vxlan(vni: 42), form: .vxlanPayload))
}

private func receive(_ worker: TestWorker, _ source: (address: IPAddress, packet: [UInt8])) throws {
    worker.transport.incoming.append((source.packet, source.address, 4789))
    _ = try worker.ingressStep()
}

@Suite("Peer reclamation")
struct PeerReclamationTests {
    @Test("a peer that left its slot is freed only after every online worker's next quiescent point")
    func freedAfterEveryWorkerPasses() throws {
        let clock = TestClock()
        let w = try learningWorkers(2, slots: 1, ageing: 1, clock: clock)
        let state = w[0].state, peers = state.peers
        _ = try w[1].egressStep()  // worker 1 is online, at the current epoch
        try receive(w[0], churnSource(0))
        let first = WeakPeer(peers[0])
        clock.advance(by: 1)
        state.agePeers()
        try receive(w[0], churnSource(1))  // takes the slot at once
        #expect(peers.all.map(\.address) == [churnSource(1).address])
        #expect(first.peer != nil)
        #expect(peers.reclaim() == 1, "neither worker has passed a quiescent point since")

        _ = try w[0].egressStep()
        #expect(peers.reclaim() == 1, "worker 1 may still hold it (a paused step)")
        #expect(first.peer != nil)
        _ = try w[1].ingressStep()
        #expect(peers.reclaim() == 0)
        #expect(first.peer == nil, "freed: the table held the last reference")

        // A worker waiting in poll holds nothing: it does not hold reclamation back.
        let second = WeakPeer(peers[0])
        clock.advance(by: 1)
        state.agePeers()
        try receive(w[0], churnSource(2))
        _ = try w[0].egressStep()
        #expect(peers.reclaim() == 1)
        peers.goOffline(worker: 1)
        #expect(peers.reclaim() == 0)
        #expect(second.peer == nil)
        // Back online, it counts again.
        _ = try w[1].egressStep()
        clock.advance(by: 1)
        state.agePeers()
        try receive(w[0], churnSource(3))
        _ = try w[0].egressStep()
        #expect(peers.reclaim() == 1, "worker 1 came back online before the slot changed hands")
        _ = try w[1].egressStep()
        #expect(peers.reclaim() == 0)
    }

    @Test("a slot goes to a newcomer as soon as its peer retires, again and again")
    func slotReusedAtOnce() throws {
        let clock = TestClock()
        let w = try learningWorkers(1, slots: 1, ageing: 1, clock: clock)
        for n in 0..<5 {
            try receive(w[0], churnSource(n))
            #expect(w[0].peers.all.map(\.address) == [churnSource(n).address])
            clock.advance(by: 1)
            w[0].state.agePeers()
        }
        #expect(w[0].state.statistics().counter(.peersLearned) == 5)
        _ = try w[0].egressStep()
        #expect(w[0].peers.reclaim() == 0)
    }

    /// Workers on their own threads learn hundreds of sources into a few slots, flood to them,
    /// and pass quiescent points (and go offline now and then, as around poll); another thread
    /// reads statistics and the forwarding table meanwhile. A reclaimed peer's destinations are
    /// overwritten by a hook: a worker still sending from it would send to 0.0.0.0 (and under
    /// TSan the hook's write races with the worker's read).
    @Test("churn: every peer that leaves a slot is freed, and never while a worker may hold it")
    func churn() throws {
        let workerCount = 3, sources = 300, rounds = 600, perRound = 4
        let clock = TestClock()
        let w = try learningWorkers(workerCount, slots: 8, ageing: 1, clock: clock)
        let state = w[0].state, peers = state.peers
        let packets = (0..<sources).map(churnSource)
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

        let running = SharedCount(workerCount)
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
                for round in 0..<rounds {
                    for k in 0..<perRound {
                        let p = packets[(round * perRound * workerCount + k * workerCount + f.index) % sources]
                        f.transport.incoming.append((p.packet, p.address, 4789))
                    }
                    _ = try f.ingressStep()
                    f.device.pending.append(udpFrame(seed: UInt8(truncatingIfNeeded: round)))  // flooded to every peer
                    _ = try f.egressStep()
                    f.transport.sent.removeAll(keepingCapacity: true)
                    f.device.written.removeAll(keepingCapacity: true)
                    if f.index == 0 {
                        if round % 8 == 0 { clock.advance(by: 1) }
                        state.agePeers()
                    }
                    if round % 16 == f.index {
                        peers.goOffline(worker: f.index)  // as around poll
                        Thread.sleep(forTimeInterval: 0.0002)
                    }
                }
                peers.goOffline(worker: f.index)
            }
        }
        let everSeen = Shared<[ObjectIdentifier: WeakPeer]>([:])
        let polls = SharedCount()
        spawn {
            while running.now > 0 {
                let s = state.statistics()
                _ = state.forwardingEntries()
                precondition(s.peers.count <= 8)
                let now = peers.all
                everSeen.withLock { seen in for p in now { seen[ObjectIdentifier(p)] = WeakPeer(p) } }
                polls.add()
            }
        }
        finished.wait()
        #expect(failures.withLock { $0 } == [])

        // Every worker is offline now: nothing may hold reclamation back.
        #expect(peers.reclaim() == 0)
        let inSlots = Set(peers.all.map(ObjectIdentifier.init))
        let seen = everSeen.withLock { $0 }
        let leftBehind = seen.values.filter { $0.peer.map { !inSlots.contains(ObjectIdentifier($0)) } ?? false }
        #expect(leftBehind.isEmpty, "peers out of their slots yet alive: \(leftBehind.count)")
        let learned = state.statistics().counter(.peersLearned)
        print("churn: \(learned) peers learned, \(reclaimed.now) reclaimed, \(sent.now) packets sent, \(polls.now) statistics polls, \(seen.count) peers seen by the poller")
        #expect(reclaimed.now >= 100, "the churn churned")
        #expect(sentToReclaimed.now == 0, "a worker sent from a reclaimed peer")
        #expect(polls.now > 0)
    }
}
