import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// Two hosts joined by two Ferrys: containers reach each other both ways, a large TCP
    /// transfer arrives intact, and the counters account for it.
    @Suite struct LiveTwoHostTests {
        struct Case: Sendable, CustomTestStringConvertible, CustomStringConvertible {
            var tunnel: LiveTunnel
            var ipv6Underlay: Bool
            /// GRE leaves on the link path (`--gre-path link`).
            var linkPath = false
            var description: String { "\(tunnel.rawValue) over IPv\(ipv6Underlay ? 6 : 4)" + (linkPath ? ", link path" : "") }
            var testDescription: String { description }
            var tag: String { "2h\(tunnel == .vxlan ? "vx" : linkPath ? "gl" : "gr")\(ipv6Underlay ? 6 : 4)" }
            var arguments: [String] { tunnel.arguments + (linkPath ? ["--gre-path", "link"] : []) }
        }

        static let cases: [Case] = [
            Case(tunnel: .vxlan, ipv6Underlay: false), Case(tunnel: .vxlan, ipv6Underlay: true),
            Case(tunnel: .gre, ipv6Underlay: false), Case(tunnel: .gre, ipv6Underlay: true),
            Case(tunnel: .gre, ipv6Underlay: false, linkPath: true), Case(tunnel: .gre, ipv6Underlay: true, linkPath: true),
        ]

        static let transferBytes = 64 * Live.mebibyte

        @Test(arguments: cases)
        func pingBothWaysAndTransfer64MiB(_ c: Case) throws {
            let live = try LiveLab(tag: c.tag, ipv6Underlay: c.ipv6Underlay)
            defer { live.teardown() }
            try live.build()
            for i in 0..<2 { try live.startFerry(on: i, tunnel: c.arguments) }
            let (h0, h1) = (live.host(0), live.host(1))
            let (a, b) = (live.container(0), live.container(1))

            // The TAP gets the underlay MTU less the encapsulation (RFC header sizes).
            let expectedMTU = c.tunnel.innerMTU(ipv6Underlay: c.ipv6Underlay)
            for h in [h0, h1] {
                #expect(try live.mtu(h.namespace, "ferry0") == expectedMTU, "\(c): TAP MTU on \(h.namespace)")
            }

            // Ping both ways, every echo answered.
            let there = try live.ping(from: a.namespace, to: b.address)
            #expect(there.allReceived, "\(c): ping \(a.address) -> \(b.address): \(there)\nh0:\n\(live.logTail(0))")
            let back = try live.ping(from: b.namespace, to: a.address)
            #expect(back.allReceived, "\(c): ping \(b.address) -> \(a.address): \(back)\nh1:\n\(live.logTail(1))")
            try #require(there.received > 0 && back.received > 0, "\(c): no connectivity through the tunnel")

            // 64 MiB of random bytes over TCP, checked end to end.
            let t = try live.transfer(bytes: Self.transferBytes, from: a.namespace, to: b.namespace, address: b.address,
                                      port: 5001, timeout: 180)
            #expect(t.receivedBytes == Self.transferBytes, "\(c): \(t)")
            #expect(t.receivedSHA256 == t.sentSHA256, "\(c): \(t)")
            print("[live \(c)] ping h0c0->h1c0 rtt \(there.rtt ?? "-"), h1c0->h0c0 rtt \(back.rtt ?? "-"); "
                  + "TCP 64 MiB in \(String(format: "%.2f", t.seconds)) s")

            // The counters account for it.
            let s0 = try live.stats(0), s1 = try live.stats(1)
            print("[live \(c)] h0 \(s0)\n[live \(c)] h1 \(s1)")
            // Oversize frames are PMTU discovery at work (the containers' MTU is 1500, the tunnel's
            // less); anything else dropped is a fault.
            #expect(s0.drops(except: ["oversize_frame"]).isEmpty, "\(c): h0 drops: \(s0)")
            #expect(s1.drops(except: ["oversize_frame"]).isEmpty, "\(c): h1 drops: \(s1)")
            // An oversize frame (TCP's GSO segments pass the bridge's MTU check) is answered with
            // an ICMP error, so that the sender shrinks its segments; silence would stall TCP.
            for (i, s) in [s0, s1].enumerated() where try s.drop("oversize_frame") > 0 {
                #expect(try s.counter("icmp_errors_sent") > 0, "\(c): h\(i) dropped oversize frames silently: \(s)")
            }

            let toB = try #require(s0.peer(h1.underlay), "\(c): h0 has no peer \(h1.underlay): \(s0)")
            let fromA = try #require(s1.peer(h0.underlay), "\(c): h1 has no peer \(h0.underlay): \(s1)")
            #expect(s0.peers.count == 1 && s1.peers.count == 1, "\(c): peers: \(s0) / \(s1)")
            #expect(!toB.learned && !fromA.learned, "\(c): configured peers reported as learned")
            #expect(toB.txBytes > UInt64(Self.transferBytes), "\(c): h0 tx to \(h1.underlay): \(s0)")
            #expect(fromA.rxBytes > UInt64(Self.transferBytes), "\(c): h1 rx from \(h0.underlay): \(s1)")
            #expect(fromA.rxPackets <= toB.txPackets, "\(c): h1 received more packets than h0 sent: \(s0) / \(s1)")
            #expect(toB.rxPackets > 0 && fromA.txPackets > 0, "\(c): the acknowledgements went back: \(s0) / \(s1)")
            // Both ends count a tunnel packet's bytes the same way: what h0 counts as sent to h1 per
            // packet is what h1 counts as received from h0 (a lost packet moves the mean by < 1 byte).
            expectSameBytesPerPacket(sent: toB, received: fromA, "\(c): h0 -> h1")
            expectSameBytesPerPacket(sent: fromA, received: toB, "\(c): h1 -> h0")
            // With offloads on (the default) the sender's TAP hands over TCP super-frames, which
            // Ferry cuts into segments that fit the tunnel: the transfer went through that path.
            #expect(try s0.counter("tap_super_frames") > 0, "\(c): h0 got no super-frames from its TAP: \(s0)")
            #expect(try s0.counter("tap_super_frame_segments") > s0.counter("tap_super_frames"), "\(c): h0 \(s0)")
            // And the receiver joined the segments again for its TAP.
            #expect(try s1.counter("coalesced_segments") > 0, "\(c): h1 coalesced nothing: \(s1)")
            if c.tunnel == .vxlan {
                // VXLAN leaves in UDP GSO sends, which arrive whole on a veth: GRO receives.
                #expect(try s0.counter("gso_sends") > 0, "\(c): h0 made no GSO sends: \(s0)")
                #expect(try s1.counter("gro_receives") > 0, "\(c): h1 had no GRO receives: \(s1)")
            } else {
                #expect(try s0.counter("gso_sends") == 0 && s1.counter("gro_receives") == 0, "\(c): GSO/GRO for GRE: \(s0)")
            }
            #expect(try s0.counter("fdb_learned") >= 1, "\(c): h0 \(s0)")
            #expect(try s1.counter("fdb_learned") >= 1, "\(c): h1 \(s1)")
            #expect(try s1.counter("tap_tx_bytes") > UInt64(Self.transferBytes), "\(c): h1 wrote the stream to its TAP: \(s1)")
            // On the link path, once the next hop is read (within a second of the first packet
            // the kernel resolves), the packets leave through the packet socket: most of them.
            for (i, s) in [s0, s1].enumerated() {
                let link = try s.counter("link_sent_packets"), sent = try s.counter("sent_packets")
                if c.linkPath {
                    #expect(link * 2 > sent, "\(c): h\(i) sent \(link) of \(sent) packets on the link path: \(s)")
                } else {
                    #expect(link == 0, "\(c): h\(i) used the link path unasked: \(s)")
                }
            }

            // Each learnt the other's container behind the other host.
            let f0 = try live.fdb(0), f1 = try live.fdb(1)
            #expect(f0.contains { $0.mac.lowercased() == b.mac && Live.sameAddress($0.peer, h1.underlay) && !$0.isStatic },
                    "\(c): h0's forwarding table lacks \(b.mac) -> \(h1.underlay): \(f0)")
            #expect(f1.contains { $0.mac.lowercased() == a.mac && Live.sameAddress($0.peer, h0.underlay) && !$0.isStatic },
                    "\(c): h1's forwarding table lacks \(a.mac) -> \(h0.underlay): \(f1)")

            // A clean stop.
            for (i, status) in live.stopFerries() {
                #expect(status == 0, "\(c): ferry on h\(i) exited \(status) on SIGINT:\n\(live.logTail(i))")
            }
        }

        // MARK: - Path MTU

        /// The underlay carries less than the containers think: the TAP is set to 1500 (as are the
        /// bridge ports and the containers' eth0) while the tunnel carries inner IP packets of at
        /// most `innerMTU` bytes. Only Ferry can tell a sender so: its ICMP "fragmentation needed"
        /// / "packet too big" must carry the tunnel's MTU, after which PMTU discovery works: the
        /// largest packet that fits crosses, and TCP completes.
        static let mtuCases: [Case] = [Case(tunnel: .vxlan, ipv6Underlay: false), Case(tunnel: .gre, ipv6Underlay: true)]

        @Test(arguments: mtuCases)
        func pathMTUTooHighIsAnsweredWithICMP(_ c: Case) throws {
            let live = try LiveLab(tag: "mtu\(c.tag.dropFirst(2))", ipv6Underlay: c.ipv6Underlay)
            defer { live.teardown() }
            try live.build()
            for i in 0..<2 { try live.startFerry(on: i, tunnel: c.tunnel.arguments, extra: ["--mtu", "1500"]) }
            let (a, b) = (live.container(0), live.container(1))
            let mtu = c.tunnel.innerMTU(ipv6Underlay: c.ipv6Underlay)
            let (a6, b6) = ("fd00:17::2", "fd00:17::3")
            for (i, (ns, address)) in [(a.namespace, a6), (b.namespace, b6)].enumerated() {
                try live.ip(live.host(i).namespace, "link", "set", "c0", "mtu", "1500")
                try live.ip(ns, "link", "set", "eth0", "mtu", "1500")
                try live.exec(ns, ["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"])
                try live.ip(ns, "-6", "addr", "add", address + "/64", "dev", "eth0", "nodad")
            }
            for h in live.hosts {
                for dev in ["ferry0", "bridge0", "c0"] {
                    #expect(try live.mtu(h.namespace, dev) == 1500, "\(c): \(dev) on \(h.namespace)")
                }
            }

            // Small packets cross both ways (ARP, neighbour discovery, learning).
            let warm = try live.ping(from: a.namespace, to: b.address, count: 3)
            let warm6 = try live.ping(from: b.namespace, to: a6, count: 3, ipv6: true)
            try #require(warm.allReceived && warm6.allReceived, "\(c): small pings fail: \(warm)\n\(warm6)")

            // (a) IPv4: a 1500-byte packet with DF set is answered "fragmentation needed, mtu".
            var before = try live.stats(0)
            let big = try live.ping(from: a.namespace, to: b.address, count: 3, size: 1500 - 28, dontFragment: true)
            #expect(big.received == 0, "\(c): a 1500-byte packet crossed a \(mtu)-byte tunnel: \(big)")
            #expect(big.output.contains("Frag needed and DF set (mtu = \(mtu))"),
                    "\(c): no 'Frag needed (mtu = \(mtu))' from the far side: \(big)")
            let again = try live.ping(from: a.namespace, to: b.address, count: 2, size: 1500 - 28, dontFragment: true)
            #expect(again.received == 0 && (again.output.contains("mtu=\(mtu)") || again.output.contains("mtu = \(mtu)")),
                    "\(c): the sender did not learn mtu \(mtu): \(again)")
            let route = try live.exec(a.namespace, ["ip", "route", "get", b.address]).stdout
            #expect(route.contains("mtu \(mtu)"), "\(c): \(a.namespace) route to \(b.address): \(route)")
            var after = try live.stats(0)
            #expect(try after.counter("icmp_errors_sent") > before.counter("icmp_errors_sent"), "\(c): h0 \(after)")
            #expect(try after.drop("oversize_frame") > before.drop("oversize_frame"), "\(c): h0 \(after)")
            // The largest packet that fits does cross.
            let fits = try live.ping(from: a.namespace, to: b.address, count: 3, size: mtu - 28, dontFragment: true)
            #expect(fits.allReceived, "\(c): a \(mtu)-byte packet should cross: \(fits)")

            // (b) TCP across the too-high path, both ways, intact. Both containers forget what they
            // learnt first (a receiver that knows the path MTU advertises a smaller MSS), so the
            // sender's full-size segments meet Ferry's oversize check and PMTU discovery recovers.
            func tcp(from s: Int, to r: Int, address: String, bytes: Int, port: Int) throws -> TransferResult {
                for ns in [a.namespace, b.namespace] {
                    try live.exec(ns, ["ip", "route", "flush", "cache"])
                    try live.exec(ns, ["ip", "-6", "route", "flush", "cache"])
                }
                let before = try live.stats(s)
                let t = try live.transfer(bytes: bytes, from: live.container(s).namespace, to: live.container(r).namespace,
                                          address: address, port: port, timeout: 120)
                #expect(t.receivedBytes == bytes && t.receivedSHA256 == t.sentSHA256, "\(c): h\(s)c0 -> \(address): \(t)")
                let after = try live.stats(s)
                #expect(try after.drop("oversize_frame") > before.drop("oversize_frame"), "\(c): h\(s) \(after)")
                #expect(try after.counter("icmp_errors_sent") > before.counter("icmp_errors_sent"), "\(c): h\(s) \(after)")
                return t
            }
            let back = try tcp(from: 1, to: 0, address: a.address, bytes: 8 * Live.mebibyte, port: 5101)
            let there = try tcp(from: 0, to: 1, address: b.address, bytes: 8 * Live.mebibyte, port: 5102)

            // (c) IPv6 inside: "packet too big" with the tunnel's MTU, then a packet that fits crosses.
            before = try live.stats(0)
            let big6 = try live.ping(from: a.namespace, to: b6, count: 3, size: 1500 - 48, dontFragment: true, ipv6: true)
            #expect(big6.received == 0, "\(c): a 1500-byte IPv6 packet crossed a \(mtu)-byte tunnel: \(big6)")
            #expect(big6.output.contains("Packet too big: mtu=\(mtu)"), "\(c): no 'Packet too big: mtu=\(mtu)': \(big6)")
            after = try live.stats(0)
            #expect(try after.counter("icmp_errors_sent") > before.counter("icmp_errors_sent"), "\(c): h0 \(after)")
            #expect(try after.drop("oversize_frame") > before.drop("oversize_frame"), "\(c): h0 \(after)")
            let route6 = try live.exec(a.namespace, ["ip", "-6", "route", "get", b6]).stdout
            #expect(route6.contains("mtu \(mtu)"), "\(c): \(a.namespace) route to \(b6): \(route6)")
            let fits6 = try live.ping(from: a.namespace, to: b6, count: 3, size: mtu - 48, dontFragment: true, ipv6: true)
            #expect(fits6.allReceived, "\(c): a \(mtu)-byte IPv6 packet should cross: \(fits6)")
            // (d) And TCP over IPv6, PMTU discovery included.
            let tcp6 = try tcp(from: 1, to: 0, address: a6, bytes: 4 * Live.mebibyte, port: 5103)
            print("[live mtu \(c)] \(big.output.split(separator: "\n").first { $0.contains("mtu") } ?? "-") | "
                  + "\(big6.output.split(separator: "\n").first { $0.contains("mtu") } ?? "-") | TCP 8 MiB back \(String(format: "%.2f", back.seconds)) s, "
                  + "there \(String(format: "%.2f", there.seconds)) s, IPv6 4 MiB \(String(format: "%.2f", tcp6.seconds)) s")

            // Nothing but oversize frames was dropped.
            for i in 0..<2 {
                let s = try live.stats(i)
                print("[live mtu \(c)] h\(i) \(s)")
                #expect(s.drops(except: ["oversize_frame"]).isEmpty, "\(c): h\(i) drops: \(s)")
            }
        }
    }
}

/// The mean size of a tunnel packet as the sender counted it (per-peer tx) and as the receiver
/// counted it (per-peer rx) must agree: both are meant to measure the same packets.
func expectSameBytesPerPacket(sent: CtlStats.Peer, received: CtlStats.Peer, _ what: String,
                              sourceLocation: SourceLocation = #_sourceLocation) {
    guard sent.txPackets > 0, received.rxPackets > 0 else {
        Issue.record("\(what): no packets (tx \(sent.txPackets), rx \(received.rxPackets))", sourceLocation: sourceLocation)
        return
    }
    let tx = Double(sent.txBytes) / Double(sent.txPackets), rx = Double(received.rxBytes) / Double(received.rxPackets)
    #expect(abs(tx - rx) < 2, """
        \(what): the sender counts \(String(format: "%.1f", tx)) bytes per tunnel packet (tx \(sent.txPackets) packets, \(sent.txBytes) bytes), \
        the receiver \(String(format: "%.1f", rx)) (rx \(received.rxPackets) packets, \(received.rxBytes) bytes): \
        per-peer rx bytes and tx bytes do not measure the same thing
        """, sourceLocation: sourceLocation)
}
