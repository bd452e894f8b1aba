import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// With `--accept-any-peer`, a learned peer that falls silent for the ageing time is
    /// retired by Ferry's own worker (floods stop going to it, its MACs are forgotten), and its
    /// next packet brings it back.
    @Suite struct LivePeerAgeingTests {
        @Test func aSilentLearnedPeerIsRetiredAndComesBack() throws {
            let live = try LiveLab(tag: "age", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let (h0, h1) = (live.host(0), live.host(1))
            let (a, b) = (h0.containers[0], h1.containers[0])
            let tunnel = ["--encap", "vxlan", "--vni", "42"]
            // h0 knows no peer; h1 knows h0.
            try live.startFerry(on: 0, peers: [], tunnel: tunnel, extra: ["--accept-any-peer", "--ageing", "2"])
            try live.startFerry(on: 1, peers: [0], tunnel: tunnel)
            let first = try live.ping(from: b.namespace, to: a.address, count: 3)
            #expect(first.received >= 1, "\(first)")
            let learned = try live.stats(0)
            #expect(learned.peer(h1.underlay)?.learned == true && learned.peer(h1.underlay)?.retired == false, "\(learned)")

            // h1's Ferry goes away: after 2 s of silence h0 retires it.
            live.stopFerry(on: 1)
            let retired = try live.waitForStats(0) { try $0.counter("peers_retired") >= 1 }
            #expect(retired.peer(h1.underlay)?.retired == true, "\(retired)")
            #expect(try retired.counter("peers_retired") == 1, "\(retired)")
            // A frame from h0's side has nowhere to go now: no send, a no_peer drop.
            let sentBefore = try retired.counter("sent_packets"), noPeerBefore = try retired.drop("no_peer")
            _ = try live.ping(from: a.namespace, to: b.address, count: 2)
            let silent = try live.stats(0)
            #expect(try silent.counter("sent_packets") == sentBefore, "h0 sent to a retired peer: \(silent)")
            #expect(try silent.drop("no_peer") > noPeerBefore, "\(silent)")

            // Back: its first packet makes it a peer again.
            try live.startFerry(on: 1, peers: [0], tunnel: tunnel, log: "ferry-h1-again.log")
            let again = try live.ping(from: b.namespace, to: a.address, count: 3)
            #expect(again.received >= 1, "\(again)")
            let back = try live.stats(0)
            #expect(back.peer(h1.underlay)?.retired == false, "\(back)")
            #expect(try back.counter("peers_learned") == 2, "\(back)")
            #expect(back.peers.count == 1, "one slot for h1, again: \(back)")
        }
    }
}
