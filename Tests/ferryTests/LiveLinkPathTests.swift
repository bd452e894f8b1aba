import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// GRE's link path under a fault: the sender's neighbour table is flushed while traffic
    /// flows. Ferry must notice within its refresh, go through the IP path (which has the kernel
    /// resolve the next hop again), and come back to the link path, with no echo lost.
    @Suite struct LiveLinkPathTests {
        @Test func aFlushedNeighbourTableSendsThroughTheIPPathUntilResolvedAgain() throws {
            let live = try LiveLab(tag: "glnf")
            defer { live.teardown() }
            try live.build()
            for i in 0..<2 { try live.startFerry(on: i, tunnel: ["--encap", "gre", "--key", "42", "--gre-path", "link"]) }
            let (h0, b) = (live.host(0), live.container(1))

            // Traffic until h0 sends on the link (its next hop read once the kernel resolved it).
            let warm = try live.ping(from: live.container(0).namespace, to: b.address, count: 10)
            #expect(warm.allReceived, "warm-up: \(warm)\n\(live.logTail(0))")
            let onLink = Lab.waitUntil(timeout: 5, interval: 0.2) { ((try? live.stats(0).counter("link_sent_packets")) ?? 0) > 0 }
            try #require(onLink, "h0 never took the link path:\n\(live.logTail(0))")
            let before = try live.stats(0)
            // ferry ctl names the path: the underlay device and the far host's MAC on it.
            let farMAC = try live.exec(live.host(1).namespace, ["cat", "/sys/class/net/u0/address"]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(before.peers.first?.linkPath == "u0 \(farMAC)", "\(before)")

            // The fault: h0 forgets every neighbour on its underlay.
            try live.ip(h0.namespace, "neigh", "flush", "dev", h0.underlayInterface)
            let during = try live.ping(from: live.container(0).namespace, to: b.address, count: 20)
            #expect(during.allReceived, "echoes lost across the flush: \(during)\n\(live.logTail(0))")

            // Back on the link after a detour through the IP path.
            let after = try live.stats(0)
            let ipBefore = try before.counter("sent_packets") - before.counter("link_sent_packets")
            let ipAfter = try after.counter("sent_packets") - after.counter("link_sent_packets")
            #expect(ipAfter > ipBefore, "no packet went through the IP path after the flush: \(after)")
            let log = (try? String(contentsOfFile: live.ferryLog(0), encoding: .utf8)) ?? ""
            let unresolved = log.range(of: "until its next hop", options: .backwards)
            let relinked = log.range(of: "takes the link path", options: .backwards)
            #expect(unresolved != nil && relinked != nil && unresolved!.lowerBound < relinked!.lowerBound,
                    "the log shows the detour and the return:\n\(live.logTail(0))")
            let final = try live.ping(from: live.container(0).namespace, to: b.address, count: 5)
            #expect(final.allReceived)
            let back = try live.stats(0)
            #expect(try back.counter("link_sent_packets") > after.counter("link_sent_packets"), "h0 is back on the link path")
            #expect(back.peers.first?.linkPath == "u0 \(farMAC)")
        }
    }
}
