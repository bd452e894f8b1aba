// The forwarding table on its own: what each operation reports, at the edges of its bounds.

import FerryEngine
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
}
