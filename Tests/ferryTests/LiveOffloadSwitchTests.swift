import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// Each offload turns off on its own (`--offloads LIST`), and what is off is really off:
    /// the TAP's features say so, the log names what is in use, and the counters show which
    /// path the traffic took, while a checked transfer crosses both ways.
    @Suite struct LiveOffloadSwitchTests {
        static let transferBytes = 16 * Live.mebibyte

        @Test func eachOffloadTurnsOffAlone() throws {
            let live = try LiveLab(tag: "offsw")
            defer { live.teardown() }
            try live.build()
            // h0 without TAP segmentation (its TAP hands over frames of the MTU only); h1
            // without UDP GSO and GRO (one send and one receive per packet, no joining).
            try live.startFerry(on: 0, tunnel: LiveTunnel.vxlan.arguments, extra: ["--workers", "1", "--offloads", "csum,gso,gro"])
            try live.startFerry(on: 1, tunnel: LiveTunnel.vxlan.arguments, extra: ["--workers", "1", "--offloads", "csum, tso,uso"])
            let (h0, h1) = (live.host(0), live.host(1))
            let (a, b) = (live.container(0), live.container(1))

            let features0 = try live.exec(h0.namespace, ["ethtool", "-k", "ferry0"]).stdout
            let features1 = try live.exec(h1.namespace, ["ethtool", "-k", "ferry0"]).stdout
            #expect(features0.contains("tx-checksumming: on") && features0.contains("tcp-segmentation-offload: off"), "h0: \(features0)")
            #expect(features1.contains("tx-checksumming: on") && features1.contains("tcp-segmentation-offload: on"), "h1: \(features1)")
            // The start-up line names what is in use (uso only where the kernel has it).
            #expect(live.logTail(0).contains("offloads=csum,gso,gro"), "h0:\n\(live.logTail(0))")
            let h1Log = live.logTail(1)
            #expect(h1Log.contains("offloads=csum,tso,uso") || h1Log.contains("offloads=csum,tso "), "h1:\n\(h1Log)")

            let ping = try live.ping(from: a.namespace, to: b.address, count: 3)
            try #require(ping.allReceived, "\(ping)")
            for (from, to, port) in [(a, b, 5001), (b, a, 5002)] {
                let t = try live.transfer(bytes: Self.transferBytes, from: from.namespace, to: to.namespace, address: to.address,
                                          port: port, timeout: 120)
                #expect(t.receivedBytes == Self.transferBytes && t.receivedSHA256 == t.sentSHA256, "\(from.address) -> \(to.address): \(t)")
            }

            let s0 = try live.stats(0), s1 = try live.stats(1)
            print("[live offloads] h0 \(s0)\n[live offloads] h1 \(s1)")
            // h0: no super-frames from its TAP, yet GSO sends (runs of equal frames to one peer),
            // and the segments h1 sent were joined for its TAP.
            #expect(try s0.counter("tap_super_frames") == 0, "h0 without tso got super-frames: \(s0)")
            #expect(try s0.counter("gso_sends") > 0, "h0 with gso sent none: \(s0)")
            #expect(try s0.counter("coalesced_segments") > 0, "h0 with gro joined nothing: \(s0)")
            // h1: super-frames from its TAP, cut and sent a packet at a time; what came in was
            // received a datagram at a time (h0's GSO sends arrive whole on a veth, so a GRO
            // socket would have had them in one piece) and written as it came.
            #expect(try s1.counter("tap_super_frames") > 0, "h1 with tso got no super-frames: \(s1)")
            #expect(try s1.counter("gso_sends") == 0, "h1 without gso used it: \(s1)")
            #expect(try s1.counter("gro_receives") == 0, "h1 without gro used it: \(s1)")
            #expect(try s1.counter("coalesced_segments") == 0, "h1 without gro joined segments: \(s1)")
            #expect(try s1.counter("tap_tx_frames") + s1.drops().values.reduce(0, +) >= s1.counter("received_packets"),
                    "h1 wrote fewer frames than it received: \(s1)")
            #expect(s0.drops(except: ["oversize_frame"]).isEmpty && s1.drops(except: ["oversize_frame"]).isEmpty,
                    "drops: \(s0) / \(s1)")
        }

        /// The kernel refusing GSO at run time: a route to the peer with an MTU below the one
        /// Ferry started with (a path MTU that shrank; DF unset, the default) makes every GSO
        /// send fail with EINVAL, and Ferry once lost them all (a TCP transfer crawled at a few
        /// hundred kbit/s). Now what was refused goes again datagram by datagram, the worker
        /// sends one datagram a message (fragmented by the kernel) for a back-off, says so, tries
        /// GSO again after it (refused again here: the route stays), and nothing is lost.
        @Test func aPathMTUThatShrinksUnderGSOSendsLosesNothing() throws {
            let live = try LiveLab(tag: "offmtu")
            defer { live.teardown() }
            try live.build()
            for i in 0..<2 { try live.startFerry(on: i, tunnel: LiveTunnel.vxlan.arguments, extra: ["--workers", "1"]) }
            let (h0, h1) = (live.host(0), live.host(1))
            let (a, b) = (live.container(0), live.container(1))
            let ping = try live.ping(from: a.namespace, to: b.address, count: 3)
            try #require(ping.allReceived, "\(ping)")
            try live.ip(h0.namespace, "route", "replace", "\(h1.underlay)/32", "dev", "u0", "mtu", "1400")
            let t = try live.transfer(bytes: Self.transferBytes, from: a.namespace, to: b.namespace, address: b.address,
                                      port: 5004, timeout: 120)
            #expect(t.receivedBytes == Self.transferBytes && t.receivedSHA256 == t.sentSHA256, "\(t)")
            let s0 = try live.stats(0)
            print("[live gso refused] h0 \(s0)")
            // Each retry is refused again: one more withdrawal per retry, at most one pending.
            let withdrawn = try s0.counter("offloads_withdrawn"), retried = try s0.counter("offloads_retried")
            #expect(withdrawn >= 1 && (withdrawn == retried || withdrawn == retried + 1), "h0: \(s0)")
            #expect(s0.drops(except: ["oversize_frame"]).isEmpty, "h0 drops: \(s0)")
            #expect(live.logTail(0).contains("the kernel refused a UDP GSO send"), "h0:\n\(live.logTail(0))")
        }

        /// GRO without TSO: the TAP hands over frames of its MTU only, yet a receive from a
        /// peer that sends with GSO holds up to 64 KiB, and must fit whole.
        @Test func groWithoutTSOTakesWholeReceivesFromAGSOPeer() throws {
            let live = try LiveLab(tag: "offgro")
            defer { live.teardown() }
            try live.build()
            try live.startFerry(on: 0, tunnel: LiveTunnel.vxlan.arguments, extra: ["--workers", "1", "--offloads", "gro"])
            try live.startFerry(on: 1, tunnel: LiveTunnel.vxlan.arguments, extra: ["--workers", "1"])
            let (a, b) = (live.container(0), live.container(1))
            #expect(live.logTail(0).contains("offloads=gro"), "h0:\n\(live.logTail(0))")
            let ping = try live.ping(from: a.namespace, to: b.address, count: 3)
            try #require(ping.allReceived, "\(ping)")
            let t = try live.transfer(bytes: Self.transferBytes, from: b.namespace, to: a.namespace, address: a.address,
                                      port: 5003, timeout: 120)
            #expect(t.receivedBytes == Self.transferBytes && t.receivedSHA256 == t.sentSHA256, "\(t)")
            let s0 = try live.stats(0), s1 = try live.stats(1)
            print("[live gro only] h0 \(s0)\n[live gro only] h1 \(s1)")
            #expect(try s1.counter("gso_sends") > 0, "h1 sent no GSO: \(s1)")
            #expect(try s0.counter("gro_receives") > 0, "h0 had no GRO receives: \(s0)")
            #expect(s0.drops(except: ["oversize_frame"]).isEmpty, "h0 drops: \(s0)")
            // No virtio header on h0's TAP: nothing to join behind, every datagram written alone.
            #expect(try s0.counter("coalesced_segments") == 0 && s0.counter("tap_super_frames") == 0, "h0: \(s0)")
        }
    }
}
