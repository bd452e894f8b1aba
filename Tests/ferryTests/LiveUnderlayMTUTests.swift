import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// The underlay's MTU lowered under a running Ferry (both hosts' u0 from 1500 to 1400):
    /// each Ferry notices within seconds, logs it once, shows it in `ferry ctl stats`, and
    /// answers what no longer fits with ICMP carrying the new tunnel MTU (1350), so a DF'd ping
    /// learns it and a TCP transfer completes. Before this, the MTU read at start stayed in use:
    /// the outer packets were cut into fragments by the kernel, or refused.
    @Suite struct LiveUnderlayMTUTests {
        @Test func aLoweredUnderlayMTUIsFollowed() throws {
            let live = try LiveLab(tag: "umtu", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let tunnel = ["--encap", "vxlan", "--vni", "42"]
            for i in 0..<2 { try live.startFerry(on: i, tunnel: tunnel) }
            let (a, b) = (live.container(0), live.container(1))
            let before = 1500 - 50, after = 1400 - 50  // inner IP MTU: the underlay's less VXLAN/IPv4
            #expect(try live.mtu(live.host(0).namespace, "ferry0") == before)

            // At 1500, a DF'd packet of the tunnel's full size crosses.
            let warm = try live.ping(from: a.namespace, to: b.address, count: 3)
            try #require(warm.allReceived, "small pings fail: \(warm)\n\(live.logTail(0))")
            let full = try live.ping(from: a.namespace, to: b.address, count: 3, size: before - 28, dontFragment: true)
            #expect(full.allReceived, "a \(before)-byte packet should cross at 1500: \(full)")
            #expect(try live.stats(0).underlayMTU == 1500)

            for h in live.hosts { try live.ip(h.namespace, "link", "set", "u0", "mtu", "1400") }
            let started = Date()
            for i in 0..<2 {
                let s = try live.waitForStats(i, timeout: 15) { $0.underlayMTU == 1400 }
                #expect(s.underlayMTU == 1400, "h\(i) still uses \(String(describing: s.underlayMTU)): \(live.logTail(i))")
            }
            let noticed = Date().timeIntervalSince(started)

            // The same packet is now answered "fragmentation needed" with the new MTU, and one
            // that fits the new MTU crosses.
            let stats0 = try live.stats(0)
            let big = try live.ping(from: a.namespace, to: b.address, count: 3, size: before - 28, dontFragment: true)
            #expect(big.received == 0, "a \(before)-byte packet crossed a 1400-byte underlay: \(big)")
            #expect(big.output.contains("Frag needed and DF set (mtu = \(after))"), "no 'Frag needed (mtu = \(after))': \(big)")
            let fits = try live.ping(from: a.namespace, to: b.address, count: 3, size: after - 28, dontFragment: true)
            #expect(fits.allReceived, "a \(after)-byte packet should cross: \(fits)")
            let stats1 = try live.stats(0)
            #expect(try stats1.drop("oversize_frame") > stats0.drop("oversize_frame") &&
                    stats1.counter("icmp_errors_sent") > stats0.counter("icmp_errors_sent"), "\(stats1)")

            // TCP both ways, PMTU discovery included (the containers forget what they learnt).
            for ns in [a.namespace, b.namespace] { try live.exec(ns, ["ip", "route", "flush", "cache"]) }
            let there = try live.transfer(bytes: 8 * Live.mebibyte, from: a.namespace, to: b.namespace, address: b.address,
                                          port: 5201, timeout: 120)
            #expect(there.receivedBytes == 8 * Live.mebibyte && there.receivedSHA256 == there.sentSHA256, "\(there)")
            let back = try live.transfer(bytes: 8 * Live.mebibyte, from: b.namespace, to: a.namespace, address: a.address,
                                         port: 5202, timeout: 120)
            #expect(back.receivedBytes == 8 * Live.mebibyte && back.receivedSHA256 == back.sentSHA256, "\(back)")

            // Logged once per Ferry; the TAP left as it was; nothing dropped but what PMTU
            // discovery costs.
            for i in 0..<2 {
                let log = (try? String(contentsOfFile: live.ferryLog(i), encoding: .utf8)) ?? ""
                let lines = log.split(separator: "\n").filter { $0.contains("changed from 1500 to 1400") }
                #expect(lines.count == 1, "h\(i): \(lines.count) lines about the change:\n\(live.logTail(i))")
                #expect(try live.mtu(live.host(i).namespace, "ferry0") == before, "h\(i): the TAP's MTU is left alone")
                let s = try live.stats(i)
                #expect(s.drops(except: ["oversize_frame"]).isEmpty, "h\(i) drops: \(s)")
                if i == 0, let line = lines.first { print("[live underlay mtu] h0 log: \(line)") }
            }
            print("[live underlay mtu] noticed by both within \(String(format: "%.1f", noticed)) s; "
                  + "\(big.output.split(separator: "\n").first { $0.contains("mtu") } ?? "-"); "
                  + "TCP 8 MiB there \(String(format: "%.2f", there.seconds)) s, back \(String(format: "%.2f", back.seconds)) s")
        }

        /// With --underlay-mtu the MTU is the one given, whatever the interface says later: after
        /// u0 is lowered, the full-size packet still goes (the kernel fragments the outer packet).
        @Test func aConfiguredUnderlayMTUIsKept() throws {
            let live = try LiveLab(tag: "umtukeep", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            for i in 0..<2 {
                try live.startFerry(on: i, tunnel: ["--encap", "vxlan", "--vni", "42"], extra: ["--underlay-mtu", "1500"])
            }
            let (a, b) = (live.container(0), live.container(1))
            let warm = try live.ping(from: a.namespace, to: b.address, count: 3)
            try #require(warm.allReceived, "small pings fail: \(warm)\n\(live.logTail(0))")
            for h in live.hosts { try live.ip(h.namespace, "link", "set", "u0", "mtu", "1400") }
            // Three of the follower's periods, had there been one.
            Thread.sleep(forTimeInterval: 3)
            let full = try live.ping(from: a.namespace, to: b.address, count: 3, size: 1450 - 28, dontFragment: true)
            #expect(full.allReceived, "the configured 1500 should still be used: \(full)")
            for i in 0..<2 {
                #expect(try live.stats(i).underlayMTU == 1500)
                let log = (try? String(contentsOfFile: live.ferryLog(i), encoding: .utf8)) ?? ""
                #expect(!log.contains("underlay MTU of"), "h\(i): \(live.logTail(i))")
            }
        }
    }
}
