// The forwarding database as the worker uses it: learning from ingress, unicast on egress,
// moves, ageing on the injected clock, static entries, the size bound, MACs that come home.

import FerryEngine
import FerryLinux
import FerryWire
import Testing

@Suite("Learning and the forwarding database")
struct LearningTests {
    @Test("a MAC learned from a peer is sent to that peer alone", arguments: Variant.all)
    func learnedMACIsUnicast(variant: Variant) throws {
        let h = try Harness(variant)
        let inner = remoteFrame(from: remoteMAC)
        #expect(try h.receive(inner, from: variant.peerB) == 1)
        #expect(h.device.written == [inner])
        #expect(h.counter(.fdbLearned) == 1)

        let entry = try #require(h.entry(for: remoteMAC))
        #expect(entry.peer == variant.peerB.description)
        #expect(!entry.isStatic)
        #expect(entry.ageSeconds == 0)
        #expect(h.worker.state.forwardingEntries().count == 1)

        let frame = udpFrame(to: remoteMAC)
        try h.egress(frame)
        #expect(h.sentTo == [variant.peerB])
        #expect(h.counter(.unicastFrames) == 1)
        #expect(h.counter(.floodedFrames) == 0)
        let sent = try #require(h.transport.sent.first)
        let d = try #require(decapsulate(ipPacket: sent.bytes).packet)
        #expect(Array(sent.bytes[d.inner]) == frame)
        #expect(h.peerStatistics(variant.peerB)?.txPackets == 1)
        #expect(h.peerStatistics(variant.peerA)?.txPackets == 0)
        #expect(h.peerStatistics(variant.peerB)?.rxPackets == 1)
    }

    @Test("a MAC that moves from one peer to another follows it")
    func macMove() throws {
        let h = try Harness()
        try h.receive(remoteFrame(seed: 1), from: peer4a)
        try h.egress(udpFrame(to: remoteMAC))
        #expect(h.sentTo == [peer4a])

        try h.receive(remoteFrame(seed: 2), from: peer4b)
        #expect(h.counter(.fdbMoved) == 1)
        #expect(h.entry(for: remoteMAC)?.peer == peer4b.description)
        try h.egress(udpFrame(to: remoteMAC))
        #expect(h.sentTo == [peer4a, peer4b])
        #expect(h.counter(.fdbLearned) == 1)

        // Seen again where it is: a refresh, not another move.
        try h.receive(remoteFrame(seed: 3), from: peer4b)
        #expect(h.counter(.fdbMoved) == 1)
    }

    @Test("an entry not refreshed for the ageing time is no longer used nor listed")
    func ageing() throws {
        let h = try Harness { $0.ageingSeconds = 300 }
        try h.receive(remoteFrame(), from: peer4b)

        h.clock.advance(by: 299)
        try h.egress(udpFrame(to: remoteMAC))
        #expect(h.sentTo == [peer4b])
        #expect(h.entry(for: remoteMAC)?.ageSeconds == 299)

        h.clock.advance(by: 1)
        #expect(h.entry(for: remoteMAC) == nil)
        #expect(h.worker.state.forwardingEntries().isEmpty)
        try h.egress(udpFrame(to: remoteMAC))
        #expect(h.counter(.floodedFrames) == 1)
        #expect(h.sentTo.count == 3)

        // The next ingress sweeps it out of the table, and counts it.
        try h.receive(remoteFrame(from: otherRemoteMAC), from: peer4a)
        #expect(h.counter(.fdbExpired) == 1)
        #expect(h.statistics.fdbEntries == 1)
    }

    @Test("a MAC seen again is refreshed and does not age from its first sighting")
    func refreshPostponesAgeing() throws {
        let h = try Harness { $0.ageingSeconds = 300 }
        try h.receive(remoteFrame(seed: 1), from: peer4b)
        h.clock.advance(by: 200)
        try h.receive(remoteFrame(seed: 2), from: peer4b)
        h.clock.advance(by: 200)
        #expect(h.entry(for: remoteMAC)?.ageSeconds == 200)
        try h.egress(udpFrame(to: remoteMAC))
        #expect(h.sentTo == [peer4b])
    }

    @Test("static entries are used at once, never aged, and not overridden by learning")
    func staticEntries() throws {
        let h = try Harness {
            $0.staticEntries = [(mac: remoteMAC, peer: peer4b)]
            $0.ageingSeconds = 300
        }
        let entry = try #require(h.entry(for: remoteMAC))
        #expect(entry.isStatic)
        #expect(entry.peer == peer4b.description)

        try h.egress(udpFrame(to: remoteMAC))
        #expect(h.sentTo == [peer4b])

        // The MAC shows up behind the other peer: delivered, but the static entry stands.
        let inner = remoteFrame(from: remoteMAC)
        try h.receive(inner, from: peer4a)
        #expect(h.device.written == [inner])
        #expect(h.counter(.fdbMoved) == 0)
        #expect(h.counter(.fdbLearned) == 0)
        #expect(h.entry(for: remoteMAC)?.peer == peer4b.description)

        // Nor does it come home when a local frame claims it, nor age.
        try h.egress(arpRequest(from: remoteMAC))
        #expect(h.counter(.fdbLocalMoved) == 0)
        h.clock.advance(by: 100_000)
        try h.receive(remoteFrame(from: otherRemoteMAC), from: peer4a)  // runs the expiry sweep
        try h.egress(udpFrame(to: remoteMAC))
        #expect(h.sentTo.last == peer4b)
        #expect(h.entry(for: remoteMAC)?.isStatic == true)
        #expect(h.counter(.unicastFrames) == 2)
    }

    @Test("the table never grows past its capacity; what does not fit counts fdb_full")
    func boundedTable() throws {
        let h = try Harness { $0.fdbCapacity = 16; $0.ageingSeconds = 300 }
        let firstWave = (0..<20).map { (bytes: h.tunnelPacket(remoteFrame(from: numberedMAC($0)), from: peer4a), source: peer4a) }
        #expect(try h.ingress(firstWave) == 20)
        #expect(h.counter(.fdbLearned) == 16)
        #expect(h.counter(.fdbFull) == 4)
        #expect(h.statistics.fdbEntries == 16)
        #expect(h.worker.state.forwardingEntries().count == 16)
        // Every frame was still delivered: a full table costs learning, not forwarding.
        #expect(h.device.written.count == 20)

        let secondWave = (100..<140).map { (bytes: h.tunnelPacket(remoteFrame(from: numberedMAC($0)), from: peer4b), source: peer4b) }
        try h.ingress(secondWave)
        #expect(h.counter(.fdbFull) == 44)
        #expect(h.statistics.fdbEntries == 16)

        // The first sixteen are still where they were learned.
        try h.egress((0..<16).map { udpFrame(to: numberedMAC($0)) })
        #expect(h.counter(.unicastFrames) == 16)
        #expect(h.sentTo.allSatisfy { $0 == peer4a })

        // Once they have aged, new MACs take their places, still within the bound.
        h.clock.advance(by: 301)
        let thirdWave = (200..<205).map { (bytes: h.tunnelPacket(remoteFrame(from: numberedMAC($0)), from: peer4b), source: peer4b) }
        try h.ingress(thirdWave)
        #expect(h.counter(.fdbLearned) == 21)
        #expect(h.statistics.fdbEntries <= 16)
        #expect(h.worker.state.forwardingEntries().count == 5)
        #expect(h.worker.state.fdb.withLock { $0.count } <= 16)
    }

    @Test("a remote MAC that appears as a source on the local bridge is forgotten")
    func macComesHome() throws {
        let h = try Harness()
        try h.receive(remoteFrame(from: remoteMAC), from: peer4b)
        #expect(h.entry(for: remoteMAC) != nil)

        // The container moved to this host: its ARP comes out of the TAP.
        try h.egress(arpRequest(from: remoteMAC))
        #expect(h.counter(.fdbLocalMoved) == 1)
        #expect(h.entry(for: remoteMAC) == nil)
        #expect(h.statistics.fdbEntries == 0)

        // Nothing is unicast to the old peer any more.
        h.transport.sent.removeAll()
        try h.egress(udpFrame(to: remoteMAC, from: localMAC))
        #expect(Set(h.sentTo.compactMap { $0 }) == [peer4a, peer4b])
        #expect(h.counter(.unicastFrames) == 0)
        // A local source that was never remote changes nothing.
        #expect(h.counter(.fdbLocalMoved) == 1)
    }

    @Test("a peer learns at most --max-macs-per-peer MACs; the rest are counted, their frames delivered")
    func macsPerPeerLimit() throws {
        let h = try Harness { $0.macsPerPeer = 3 }
        let claims = (0..<5).map { h.tunnelPacket(remoteFrame(from: numberedMAC($0)), from: peer4a) }
        #expect(try h.ingress(claims.map { ($0, peer4a) }) == 5)
        #expect(h.counter(.fdbLearned) == 3)
        #expect(h.counter(.fdbPeerLimit) == 2)
        #expect(h.device.written.count == 5, "a MAC not learned is still delivered")
        #expect(h.worker.state.forwardingEntries().map(\.mac) == (0..<3).map { numberedMAC($0).description })
        // Another peer is not held to the first one's count.
        try h.receive(remoteFrame(from: numberedMAC(3)), from: peer4b)
        #expect(h.entry(for: numberedMAC(3))?.peer == peer4b.description)
        // Once the first one's MACs have aged and been swept out, it may learn again.
        h.clock.advance(by: 300)
        try h.receive(remoteFrame(from: numberedMAC(10)), from: peer4a)
        #expect(h.entry(for: numberedMAC(10))?.peer == peer4a.description)
        #expect(h.counter(.fdbPeerLimit) == 2)
    }

    @Test("a MAC seen on the local bridge is never learned behind a peer while it is known there")
    func localMACIsNotLearnedOnAPeer() throws {
        let h = try Harness { $0.ageingSeconds = 300 }
        try h.egress(arpRequest(from: localMAC))
        // A peer claims the local container's MAC: the frame goes to the bridge, the claim is refused.
        let claim = remoteFrame(from: localMAC, to: .broadcast)
        try h.receive(claim, from: peer4b)
        #expect(h.device.written == [claim])
        #expect(h.counter(.fdbLocalRefused) == 1)
        #expect(h.counter(.fdbLearned) == 0 && h.counter(.fdbMoved) == 0)
        #expect(h.entry(for: localMAC) == nil)
        // Frames for it are not sent to the claimant alone.
        h.transport.sent.removeAll()
        try h.egress(udpFrame(to: localMAC, from: MACAddress(0x02, 0x11, 0, 0, 0, 0x02)))
        #expect(Set(h.sentTo.compactMap { $0 }) == [peer4a, peer4b])
        #expect(h.counter(.unicastFrames) == 0)

        // Silent on the bridge for the ageing time, it is no longer known as local: a claim
        // then stands, until the container speaks again.
        h.clock.advance(by: 299)
        try h.receive(remoteFrame(from: localMAC, seed: 2), from: peer4b)
        #expect(h.counter(.fdbLocalRefused) == 2)
        h.clock.advance(by: 1)
        try h.receive(remoteFrame(from: localMAC, seed: 3), from: peer4b)
        #expect(h.entry(for: localMAC)?.peer == peer4b.description)
        try h.egress(arpRequest(from: localMAC))
        #expect(h.entry(for: localMAC) == nil)
        #expect(h.counter(.fdbLocalMoved) == 1)
    }

    @Test("an inner source MAC that is multicast, zero or the TAP's own is dropped and not learned")
    func invalidInnerSourceMAC() throws {
        let h = try Harness()
        let multicastSource = remoteFrame(from: MACAddress(0x01, 0x00, 0x5E, 0, 0, 1), seed: 1)
        let zeroSource = remoteFrame(from: .zero, seed: 2)
        let loopedSource = remoteFrame(from: tapMAC, seed: 3)
        let broadcastSource = remoteFrame(from: .broadcast, seed: 4)
        let valid = remoteFrame(from: remoteMAC, seed: 5)
        let batch = [multicastSource, zeroSource, loopedSource, broadcastSource, valid].map {
            (bytes: h.tunnelPacket($0, from: peer4a), source: peer4a)
        }
        #expect(try h.ingress(batch) == 5)
        #expect(h.drops(.innerSourceMACInvalid) == 4)
        #expect(h.device.written == [valid])
        #expect(h.worker.state.forwardingEntries().map(\.mac) == [remoteMAC.description])
        #expect(h.counter(.fdbLearned) == 1)
        #expect(h.peerStatistics(peer4a)?.rxPackets == 1)
    }
}

@Suite("Accepting any peer")
struct AcceptAnyPeerTests {
    @Test("an unknown source is learned as a peer, then gets flooded frames and its MACs' unicast",
          arguments: [Variant.vxlan4, .gre4, .vxlan6])
    func unknownSourceBecomesAPeer(variant: Variant) throws {
        let h = try Harness(variant, peers: [variant.peerA]) { $0.acceptAnyPeer = true }
        let inner = remoteFrame(from: remoteMAC)
        try h.receive(inner, from: variant.stranger)
        #expect(h.device.written == [inner])
        #expect(h.counter(.peersLearned) == 1)
        #expect(h.drops(.unknownPeer) == 0)

        let peers = h.statistics.peers
        try #require(peers.count == 2)
        #expect(peers.map(\.address) == [variant.peerA.description, variant.stranger.description])
        #expect(peers.map(\.learned) == [false, true])
        #expect(peers[1].rxPackets == 1)
        #expect(h.entry(for: remoteMAC)?.peer == variant.stranger.description)

        // A second packet from it is not a second peer.
        try h.receive(remoteFrame(from: remoteMAC, seed: 9), from: variant.stranger)
        #expect(h.counter(.peersLearned) == 1)
        #expect(h.statistics.peers.count == 2)

        try h.egress(arpRequest(from: localMAC))
        #expect(Set(h.sentTo.compactMap { $0 }) == [variant.peerA, variant.stranger])
        let toStranger = try #require(h.transport.sent.first { $0.destination == variant.stranger })
        #expect(decapsulate(ipPacket: toStranger.bytes).packet?.outerDestination == variant.stranger)

        try h.egress(udpFrame(to: remoteMAC))
        #expect(h.sentTo.last == variant.stranger)
        #expect(h.transport.sent.count == 3)
    }

    @Test("with no configured peer, the first learned one ends no_peer")
    func firstLearnedPeerEndsNoPeer() throws {
        let h = try Harness(peers: []) { $0.acceptAnyPeer = true }
        try h.egress(arpRequest(from: localMAC))
        #expect(h.drops(.noPeer) == 1)
        try h.receive(remoteFrame(), from: stranger4)
        try h.egress(arpRequest(from: localMAC))
        #expect(h.sentTo == [stranger4])
        #expect(h.drops(.noPeer) == 1)
    }

    @Test("a learned peer silent for the ageing time is retired: no floods, its MACs forgotten; a packet brings it back")
    func silentLearnedPeerIsRetired() throws {
        let h = try Harness(peers: [peer4a]) {
            $0.acceptAnyPeer = true
            $0.ageingSeconds = 60
        }
        try h.receive(remoteFrame(from: remoteMAC), from: stranger4)
        h.clock.advance(by: 59)
        h.worker.state.agePeers()
        #expect(h.statistics.peers.map(\.retired) == [false, false], "not silent long enough")
        h.clock.advance(by: 1)
        h.worker.state.agePeers()
        // The configured peer never spoke either: it is never retired.
        #expect(h.statistics.peers.map(\.retired) == [false, true])
        #expect(h.counter(.peersRetired) == 1)
        #expect(h.entry(for: remoteMAC) == nil)
        try h.egress(arpRequest(from: localMAC))
        #expect(h.sentTo == [peer4a], "a flood skips the retired peer")

        try h.receive(remoteFrame(from: remoteMAC, seed: 2), from: stranger4)
        #expect(h.statistics.peers.map(\.retired) == [false, false])
        #expect(h.counter(.peersLearned) == 2, "learned again")
        #expect(h.entry(for: remoteMAC)?.peer == stranger4.description)
        try h.egress(arpRequest(from: localMAC))
        #expect(Array(h.sentTo.suffix(2)) == [peer4a, stranger4])
        h.clock.advance(by: 1)
        h.worker.state.agePeers()
        #expect(h.counter(.peersRetired) == 1, "heard from a second ago")
    }

    @Test("with --accept-cidr, a source outside every prefix never becomes a peer; configured peers are not held to it",
          arguments: [Variant.vxlan4, .gre4, .vxlan6])
    func acceptPrefixes(variant: Variant) throws {
        let inside = try IPPrefix(parsing: variant.ipv6 ? "fd00:99::8/125" : "10.99.0.8/29")
        let h = try Harness(variant, peers: [variant.peerA]) {
            $0.acceptAnyPeer = true
            $0.acceptPrefixes = [inside]
        }
        #expect(inside.contains(variant.stranger) && !inside.contains(variant.peerA) && !inside.contains(variant.peerB))
        // peerB is outside: nothing delivered, no peer, no MAC, one drop per packet.
        let outside = (0..<4).map { (h.tunnelPacket(remoteFrame(from: numberedMAC($0)), from: variant.peerB), variant.peerB) }
        #expect(try h.ingress(outside) == 4)
        #expect(h.drops(.peerNotAccepted) == 4)
        #expect(h.drops(.unknownPeer) == 0)
        #expect(h.device.written.isEmpty)
        #expect(h.statistics.peers.map(\.address) == [variant.peerA.description])
        #expect(h.worker.state.forwardingEntries().isEmpty)
        // A malformed packet from outside counts its own reason, not this one.
        try h.ingress([(Array(h.tunnelPacket(remoteFrame(), from: variant.peerB).prefix(10)), variant.peerB)])
        #expect(h.drops(.peerNotAccepted) == 4)

        // Inside: learned. The configured peer, outside, is a peer all the same.
        try h.receive(remoteFrame(from: remoteMAC), from: variant.stranger)
        try h.receive(remoteFrame(from: otherRemoteMAC), from: variant.peerA)
        #expect(h.statistics.peers.map(\.address) == [variant.peerA.description, variant.stranger.description])
        #expect(h.device.written.count == 2)
        #expect(h.drops(.peerNotAccepted) == 4)
    }

    @Test("a local container's MAC as inner source is dropped: its sender does not become a peer, nor learn it")
    func localMACClaimIsDropped() throws {
        let h = try Harness(peers: [peer4a]) { $0.acceptAnyPeer = true }
        try h.egress(arpRequest(from: localMAC))
        let claims = [(h.tunnelPacket(remoteFrame(from: localMAC), from: stranger4), stranger4),
                      (h.tunnelPacket(remoteFrame(from: localMAC, seed: 1), from: peer4a), peer4a)]
        #expect(try h.ingress(claims) == 2)
        #expect(h.drops(.innerSourceMACLocal) == 2)
        #expect(h.device.written.isEmpty, "delivered, it would move the container's bridge port to the TAP")
        #expect(h.counter(.peersLearned) == 0)
        #expect(h.statistics.peers.map(\.address) == [peer4a.description])
        #expect(h.entry(for: localMAC) == nil)
        // The stranger's own MACs are welcome.
        try h.receive(remoteFrame(from: remoteMAC), from: stranger4)
        #expect(h.entry(for: remoteMAC)?.peer == stranger4.description)
        // Once the container is no longer known as local (silent for the ageing time, swept
        // out), its MAC is an ordinary one.
        h.clock.advance(by: h.configuration.ageingSeconds + ForwardingTable.expiryInterval)
        try h.receive(remoteFrame(from: remoteMAC, seed: 2), from: stranger4)  // the sweep
        try h.receive(remoteFrame(from: localMAC, seed: 3), from: stranger4)
        #expect(h.drops(.innerSourceMACLocal) == 2)
        #expect(h.entry(for: localMAC)?.peer == stranger4.description)
    }

    /// Three hosts no configuration names.
    static let strangers = (IPAddress.v4(IPv4Address(10, 99, 0, 21)), IPAddress.v4(IPv4Address(10, 99, 0, 22)),
                            IPAddress.v4(IPv4Address(10, 99, 0, 23)))

    /// A worker that learns peers into `maximumPeers` slots and ages them after `ageing` s.
    static func learningHarness(maximumPeers: Int, ageing: Int64) throws -> Harness {
        try Harness(peers: []) {
            $0.acceptAnyPeer = true
            $0.maximumPeers = maximumPeers
            $0.ageingSeconds = ageing
        }
    }

    @Test("a full table gives a retired peer's slot to a new one, whose counters start from zero")
    func fullTableReusesARetiredSlot() throws {
        let (a, b, c) = Self.strangers
        let h = try Self.learningHarness(maximumPeers: 2, ageing: 60)
        let macA = MACAddress(0x02, 0, 0, 0, 0, 0xa1), macB = MACAddress(0x02, 0, 0, 0, 0, 0xb1), macC = MACAddress(0x02, 0, 0, 0, 0, 0xc1)
        try h.receive(remoteFrame(from: macA), from: a)
        try h.receive(remoteFrame(from: macA, seed: 1), from: a)
        try h.receive(remoteFrame(from: macB), from: b)
        try h.receive(remoteFrame(from: macC), from: c)
        #expect(h.drops(.unknownPeer) == 1, "full")

        h.clock.advance(by: 40)
        try h.receive(remoteFrame(from: macB, seed: 3), from: b)
        h.clock.advance(by: 30)
        h.worker.state.agePeers()
        #expect(h.statistics.peers.map(\.retired) == [true, false], "a is 70 s silent, b 30 s")
        try h.receive(remoteFrame(from: macC, seed: 4), from: c)
        let peers = h.statistics.peers
        #expect(peers.map(\.address) == [c.description, b.description], "c took a's slot")
        #expect(peers.map(\.retired) == [false, false])
        #expect(peers[0].rxPackets == 1, "c's own count, not a's two and its one")
        #expect(h.entry(for: macC)?.peer == c.description)
        #expect(h.counter(.peersLearned) == 3)
        #expect(h.worker.peers.isFull, "no retired slot left")
        // a is gone for good now, and there is no room for it.
        try h.receive(remoteFrame(from: macA, seed: 5), from: a)
        #expect(h.drops(.unknownPeer) == 2)
        #expect(h.device.written.count == 5)
    }

    /// A MAC the table still ties to a retired peer's slot (learned in a race with its
    /// retirement) must not follow the slot to the newcomer; and a slot given once can be
    /// given again as soon as its new peer retires (the peer that left is kept alive by the
    /// table until no worker can hold it, not for a time).
    @Test("a reused slot carries none of the last peer's MACs, and can be reused again at once")
    func reusedSlotForgetsAndIsReusedAgain() throws {
        let (a, b, c) = Self.strangers
        let h = try Self.learningHarness(maximumPeers: 1, ageing: 5)
        let macA = MACAddress(0x02, 0, 0, 0, 0, 0xa1), stray = MACAddress(0x02, 0, 0, 0, 0, 0xa2)
        try h.receive(remoteFrame(from: macA), from: a)
        h.clock.advance(by: 5)
        h.worker.state.agePeers()
        #expect(h.statistics.peers.map(\.retired) == [true])
        // The race's leftover: an entry for slot 0 learned just now.
        h.worker.state.fdb.withLock { _ = $0.learn(stray, peer: 0, now: h.clock.now) }
        try h.receive(remoteFrame(from: MACAddress(0x02, 0, 0, 0, 0, 0xb1)), from: b)
        #expect(h.statistics.peers.map(\.address) == [b.description])
        #expect(h.entry(for: stray) == nil, "a's MAC must not lead to b")

        // b falls silent too, 5 s after it took the slot: c takes it at once.
        h.clock.advance(by: 5)
        h.worker.state.agePeers()
        try h.receive(remoteFrame(from: MACAddress(0x02, 0, 0, 0, 0, 0xc1)), from: c)
        #expect(h.statistics.peers.map(\.address) == [c.description])
        #expect(h.drops(.unknownPeer) == 0)
        #expect(h.statistics.peers.first?.rxPackets == 1, "c's own count")
    }
}
