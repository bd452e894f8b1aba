import FerryLab
import Foundation
import Testing

extension Lab3LiveTests {
    /// With `--accept-any-peer`, a learned peer that falls silent for the ageing time is
    /// retired by Ferry's own worker (floods stop going to it, its MACs are forgotten), and its
    /// next packet brings it back.
    @Suite struct LivePeerAgeingTests {
        @Test func aSilentLearnedPeerIsRetiredAndComesBack() throws {
            let lab = try Lab3.build(prefix: "l3age", hosts: 2)
            let dir = try Lab3.scratch("age")
            defer {
                Lab3.teardown(lab)
                try? FileManager.default.removeItem(atPath: dir)
            }
            let (h0, h1) = (lab.hosts[0], lab.hosts[1])
            let (a, b) = (h0.containers[0], h1.containers[0])
            let tunnel = ["--encap", "vxlan", "--vni", "42"]
            // h0 knows no peer; h1 knows h0.
            let f0 = try Lab3.startFerry(lab, on: h0, peers: [], tunnel: tunnel, extra: ["--accept-any-peer", "--ageing", "2"],
                                         log: "\(dir)/ferry-h0.log")
            defer { Lab.stop(f0) }
            var f1 = try Lab3.startFerry(lab, on: h1, peers: [h0], tunnel: tunnel, log: "\(dir)/ferry-h1.log")
            let first = try Lab3.ping(lab, from: b.namespace, to: a.address, count: 3)
            #expect(first.received >= 1, "\(first)")
            let learned = try Lab3.stats(lab, 0)
            #expect(learned.peer(h1.underlay)?.learned == true && learned.peer(h1.underlay)?.retired == false, "\(learned)")

            // h1's Ferry goes away: after 2 s of silence h0 retires it.
            Lab.stop(f1)
            let retired = try Lab3.waitForStats(lab, 0) { $0.counter("peers_retired") >= 1 }
            #expect(retired.peer(h1.underlay)?.retired == true, "\(retired)")
            #expect(retired.counter("peers_retired") == 1, "\(retired)")
            // A frame from h0's side has nowhere to go now: no send, a no_peer drop.
            let sentBefore = retired.counter("sent_packets"), noPeerBefore = retired.drop("no_peer")
            _ = try Lab3.ping(lab, from: a.namespace, to: b.address, count: 2)
            let silent = try Lab3.stats(lab, 0)
            #expect(silent.counter("sent_packets") == sentBefore, "h0 sent to a retired peer: \(silent)")
            #expect(silent.drop("no_peer") > noPeerBefore, "\(silent)")

            // Back: its first packet makes it a peer again.
            f1 = try Lab3.startFerry(lab, on: h1, peers: [h0], tunnel: tunnel, log: "\(dir)/ferry-h1-again.log")
            defer { Lab.stop(f1) }
            let again = try Lab3.ping(lab, from: b.namespace, to: a.address, count: 3)
            #expect(again.received >= 1, "\(again)")
            let back = try Lab3.stats(lab, 0)
            #expect(back.peer(h1.underlay)?.retired == false, "\(back)")
            #expect(back.counter("peers_learned") == 2, "\(back)")
            #expect(back.peers.count == 1, "one slot for h1, again: \(back)")
        }
    }
}
