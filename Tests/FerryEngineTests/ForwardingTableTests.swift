// The forwarding table on its own: what each operation reports, at the edges of its bounds.

import FerryEngine
import FerryTestSupport
import FerryWire
import Testing

@Suite("ForwardingTable")
struct ForwardingTableTests {
    @Test("learn reports learned, refreshed, moved, staticKept and full")
    func learnOutcomes() {
        var t = ForwardingTable(capacity: 2, ageingSeconds: 300)
        #expect(t.learn(remoteMAC, peer: 0, now: 10) == .learned)
        #expect(t.learn(remoteMAC, peer: 0, now: 20) == .refreshed)
        #expect(t.entries[remoteMAC]?.lastSeen == 20)
        #expect(t.learn(remoteMAC, peer: 1, now: 30) == .moved(from: 0))
        #expect(t.lookup(remoteMAC, now: 30) == 1)
        t.addStatic(otherRemoteMAC, peer: 0)
        #expect(t.learn(otherRemoteMAC, peer: 1, now: 40) == .staticKept)
        #expect(t.lookup(otherRemoteMAC, now: 40) == 0)
        #expect(t.learn(numberedMAC(1), peer: 0, now: 40) == .full)
        #expect(t.count == 2)
    }

    @Test("an entry is good for exactly ageingSeconds; a full table makes room from aged entries")
    func ageingEdges() {
        var t = ForwardingTable(capacity: 1, ageingSeconds: 300)
        t.learn(remoteMAC, peer: 0, now: 1000)
        #expect(t.lookup(remoteMAC, now: 1299) == 0)
        #expect(t.lookup(remoteMAC, now: 1300) == nil)
        #expect(t.learn(otherRemoteMAC, peer: 1, now: 1300) == .learned)
        #expect(t.count == 1)
        #expect(t.lookup(otherRemoteMAC, now: 1300) == 1)
    }

    @Test("static entries stop where the slots would run out, refused rather than a trap; one is repinned")
    func staticEntriesAreBounded() {
        var t = ForwardingTable(capacity: 4, ageingSeconds: 300)  // 8 slots
        var added = 0
        for i in 1...20 where t.addStatic(numberedMAC(i), peer: 0) { added += 1 }
        #expect(added == 7, "past the capacity of 4, but not past the 8 slots less one")
        #expect(t.count == 7)
        for i in 1...7 { #expect(t.lookup(numberedMAC(i), now: 0) == 0) }
        let repinned = t.addStatic(numberedMAC(2), peer: 1)
        #expect(repinned)
        #expect(t.lookup(numberedMAC(2), now: 0) == 1)
        let learned = t.learn(numberedMAC(30), peer: 0, now: 0)
        #expect(learned == .full)
    }

    @Test("expire removes only aged learned entries; forget spares static ones")
    func expireAndForget() {
        var t = ForwardingTable(capacity: 8, ageingSeconds: 300)
        t.addStatic(numberedMAC(1), peer: 0)
        t.learn(numberedMAC(2), peer: 0, now: 0)
        t.learn(numberedMAC(3), peer: 0, now: 200)
        let expired = t.expire(now: 300)
        #expect(expired == 1)
        #expect(t.count == 2)
        let forgotStatic = t.forget(numberedMAC(1))
        let forgotLearned = t.forget(numberedMAC(3))
        let forgotAgain = t.forget(numberedMAC(3))
        #expect(!forgotStatic)
        #expect(forgotLearned)
        #expect(!forgotAgain)
        #expect(t.count == 1)
        #expect(t.lookup(numberedMAC(1), now: 1_000_000) == 0)
    }

    /// Many entries in few slots make clusters that wrap around the end: removing one peer's
    /// entries must shift the others back so that every one is still found.
    @Test("forget(peer:) removes that peer's learned entries and keeps every other findable")
    func forgetPeer() {
        var t = ForwardingTable(capacity: 40, ageingSeconds: 300)
        let macs = (1...40).map { numberedMAC($0) }
        for (i, mac) in macs.enumerated() { t.learn(mac, peer: i % 3, now: 10) }
        t.addStatic(remoteMAC, peer: 1)
        #expect(t.forget(peer: 1) == macs.indices.filter { $0 % 3 == 1 }.count)
        for (i, mac) in macs.enumerated() {
            #expect(t.lookup(mac, now: 20) == (i % 3 == 1 ? nil : i % 3), "\(mac)")
        }
        #expect(t.lookup(remoteMAC, now: 20) == 1, "a static entry stays")
        #expect(t.count == 40 - macs.indices.filter { $0 % 3 == 1 }.count + 1)
    }

    /// The table against a dictionary doing the same thing, over random learns, forgets,
    /// expiries and lookups of a few hundred MACs in a small table: removals from the middle of
    /// probe clusters must leave every other key findable.
    @Test("random operations agree with a dictionary model", arguments: [1, 2, 3])
    func agreesWithModel(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let capacity = 48, ageing: Int64 = 50
        var t = ForwardingTable(capacity: capacity, ageingSeconds: ageing)
        var model: [MACAddress: ForwardingTable.Entry] = [:]
        var lastSweep = Int64.min
        func modelExpire(_ now: Int64) -> Int {
            let before = model.count
            model = model.filter { $0.value.isStatic || now - $0.value.lastSeen < ageing }
            return before - model.count
        }
        let macs = (0..<300).map { _ in MACAddress(value: rng.next() & 0xFEFF_FFFF_FFFF) }
        for mac in macs.prefix(3) {
            t.addStatic(mac, peer: 9)
            model[mac] = .init(peer: 9, lastSeen: 0, isStatic: true)
        }
        var now: Int64 = 0
        for step in 0..<20_000 {
            if rng.next() % 8 == 0 { now += 1 }
            let mac = macs[Int(rng.next() % UInt64(macs.count))]
            switch rng.next() % 10 {
            case 0..<5:
                let peer = Int(rng.next() % 3)
                let expected: ForwardingTable.LearnOutcome
                if let e = model[mac] {
                    if e.isStatic { expected = .staticKept } else {
                        model[mac] = .init(peer: peer, lastSeen: now, isStatic: false)
                        expected = e.peer == peer ? .refreshed : .moved(from: e.peer)
                    }
                } else {
                    if model.count >= capacity, now != lastSweep { lastSweep = now; _ = modelExpire(now) }
                    if model.count >= capacity { expected = .full } else {
                        model[mac] = .init(peer: peer, lastSeen: now, isStatic: false)
                        expected = .learned
                    }
                }
                #expect(t.learn(mac, peer: peer, now: now) == expected, "step \(step)")
            case 5..<7:
                let present = model[mac].map { !$0.isStatic } ?? false
                if present { model[mac] = nil }
                #expect(t.forget(mac) == present, "step \(step)")
            case 7:
                let expected = modelExpire(now)
                #expect(t.expire(now: now) == expected, "step \(step)")
            default:
                let e = model[mac]
                let expected = e.flatMap { $0.isStatic || now - $0.lastSeen < ageing ? $0.peer : nil }
                #expect(t.lookup(mac, now: now) == expected, "step \(step)")
            }
            #expect(t.count == model.count, "step \(step)")
            for p in 0..<3 {
                let held = model.values.filter { !$0.isStatic && $0.peer == p }.count
                #expect(t.macCount(peer: p) == held, "step \(step): peer \(p)'s count")
            }
        }
        #expect(t.entries == model)
    }

    @Test("a peer learns at most macsPerPeer MACs; the count follows moves, expiry, forgetting and statics")
    func macsPerPeerBound() {
        var t = ForwardingTable(capacity: 64, ageingSeconds: 300, peers: 4, macsPerPeer: 3)
        for i in 1...3 { #expect(t.learn(numberedMAC(i), peer: 0, now: 10) == .learned) }
        #expect(t.learn(numberedMAC(4), peer: 0, now: 10) == .peerLimit)
        #expect(t.lookup(numberedMAC(4), now: 10) == nil)
        #expect(t.learn(numberedMAC(1), peer: 0, now: 11) == .refreshed, "one it holds is refreshed at the limit")
        #expect(t.macCount(peer: 0) == 3)
        // Another peer has its own allowance, and may take a MAC over (peer 0 then has room)…
        #expect(t.learn(numberedMAC(1), peer: 1, now: 12) == .moved(from: 0))
        #expect(t.macCount(peer: 0) == 2 && t.macCount(peer: 1) == 1)
        #expect(t.learn(numberedMAC(4), peer: 0, now: 12) == .learned)
        // …but a peer at its limit cannot take one from another: the entry stays where it was.
        #expect(t.learn(numberedMAC(1), peer: 0, now: 13) == .peerLimit)
        #expect(t.lookup(numberedMAC(1), now: 13) == 1)
        // Forgetting, a static pin and expiry each give room back.
        let forgot = t.forget(numberedMAC(2))
        #expect(forgot)
        #expect(t.macCount(peer: 0) == 2)
        t.addStatic(numberedMAC(3), peer: 2)
        #expect(t.macCount(peer: 0) == 1 && t.macCount(peer: 2) == 0, "static entries are not learned ones")
        #expect(t.expire(now: 312) == 2)
        #expect(t.macCount(peer: 0) == 0 && t.macCount(peer: 1) == 0)
        for i in 10...12 { #expect(t.learn(numberedMAC(i), peer: 0, now: 312) == .learned) }
        #expect(t.forget(peer: 0) == 3)
        #expect(t.macCount(peer: 0) == 0)
        #expect(t.learn(numberedMAC(13), peer: 0, now: 312) == .learned)
    }

    @Test("a local MAC is never learned behind a peer until it ages out; one learned behind a peer comes home")
    func localMACs() {
        var t = ForwardingTable(capacity: 4, ageingSeconds: 300)
        #expect(t.noteLocal(localMAC, now: 100) == .recorded)
        #expect(t.noteLocal(localMAC, now: 150) == .known)
        #expect(t.localCount == 1 && t.count == 0, "local entries are not counted with learned ones")
        #expect(t.entries.isEmpty && t.localEntries == [localMAC: 150])
        #expect(t.learn(localMAC, peer: 0, now: 200) == .localKept)
        #expect(t.lookup(localMAC, now: 200) == nil, "frames for a local MAC flood, as before")
        #expect(t.macCount(peer: 0) == 0)
        // Not refreshed by a peer's claim: it ages from its last local frame.
        #expect(t.learn(localMAC, peer: 0, now: 449) == .localKept)
        #expect(t.learn(localMAC, peer: 0, now: 450) == .learned, "aged out: no longer known as local")
        #expect(t.lookup(localMAC, now: 450) == 0)
        #expect(t.localCount == 0 && t.count == 1 && t.macCount(peer: 0) == 1)
        // It sends from the bridge again: home.
        #expect(t.noteLocal(localMAC, now: 451) == .movedHome)
        #expect(t.lookup(localMAC, now: 451) == nil)
        #expect(t.localCount == 1 && t.count == 0 && t.macCount(peer: 0) == 0)
        // A static pin stays what it is.
        t.addStatic(remoteMAC, peer: 1)
        #expect(t.noteLocal(remoteMAC, now: 451) == .known)
        #expect(t.lookup(remoteMAC, now: 451) == 1)
        // Local and learned entries share the bound; aged local ones make room.
        #expect(t.learn(numberedMAC(1), peer: 0, now: 451) == .learned)
        #expect(t.noteLocal(numberedMAC(2), now: 451) == .recorded)
        #expect(t.noteLocal(numberedMAC(3), now: 451) == .full, "1 static + 1 learned + 2 local = 4")
        #expect(t.learn(numberedMAC(4), peer: 0, now: 451) == .full)
        #expect(t.expire(now: 751) == 1, "only learned entries are counted as expired")
        #expect(t.localCount == 0 && t.count == 1)
        #expect(t.noteLocal(numberedMAC(3), now: 751) == .recorded)
    }
}
