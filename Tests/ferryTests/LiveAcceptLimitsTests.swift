import FerryLab
import FerryWire
import Foundation
import Testing

extension LiveLabTests {
    /// Accept-any with its limits, against spoofed tunnel packets sent from h1's namespace with
    /// a raw socket: sources outside `--accept-cidr` get nothing (no peer, no MAC, no frame on
    /// the bridge), one inside it learns no more than `--max-macs-per-peer` MACs, and nobody may
    /// claim a local container's MAC (neither Ferry's table nor h0's bridge moves it).
    @Suite struct LiveAcceptLimitsTests {
        static let spoofedSources = 300
        static let macLimit = 4
        static let claimedMACs = 10
        /// Inside 10.99.0.0/29 (with h0 and h1), but no host of the lab.
        static let insider = "10.99.0.5"

        /// A broadcast frame from `mac` that nobody else sends (EtherType 0x88b5, local experimental).
        static func frame(from mac: String) -> [UInt8] {
            var bytes = [UInt8](repeating: 0xff, count: 6) + mac.split(separator: ":").map { UInt8($0, radix: 16)! } + [0x88, 0xb5]
            bytes += Array("ferry accept limits".utf8)
            while bytes.count < 60 { bytes.append(0) }
            return bytes
        }

        /// A VXLAN packet (VNI 42) from `source` to h0, whole, for IP_HDRINCL.
        static func vxlan(from source: String, to destination: String, inner: [UInt8]) -> [UInt8] {
            typealias P = HandMadePacket
            return P.ipv4(source: source, destination: destination, protocol: IPProtocol.udp,
                          payload: P.udp(sourcePort: 49152, payload: P.vxlan(vni: 42, inner: inner)))
        }

        /// UDP datagrams h0's kernel dropped (full socket buffers and the like) so far.
        static func kernelUDPDrops(_ live: LiveLab, _ ns: String) throws -> Int {
            let s = try live.snmp(ns)
            // InErrors counts every datagram the kernel dropped on receive (a full buffer's
            // RcvbufErrors and InCsumErrors among them). The keys keep the group's colon.
            guard let errors = s["Udp:InErrors"] else { throw UnexpectedOutput("no Udp:InErrors in /proc/net/snmp: \(s.keys.sorted())") }
            return errors
        }

        @Test func sourcesOutsideThePrefixGetNothingAndAPeerInsideClaimsOnlyWhatItMay() throws {
            let live = try LiveLab(tag: "acl", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let (h0, h1) = (live.host(0), live.host(1))
            let (a, b) = (h0.containers[0], h1.containers[0])
            let tunnel = ["--encap", "vxlan", "--vni", "42"]
            // Spoofed sources from outside the underlay's subnet reach h0's socket: no reverse-path filter.
            for key in ["all", "default", "u0"] { try live.exec(h0.namespace, ["sysctl", "-qw", "net.ipv4.conf.\(key).rp_filter=0"]) }
            try live.startFerry(on: 0, peers: [], tunnel: tunnel,
                                extra: ["--accept-any-peer", "--accept-cidr", "10.99.0.0/29", "--max-macs-per-peer", String(Self.macLimit)])
            try live.startFerry(on: 1, peers: [0], tunnel: tunnel)
            // h1 becomes h0's peer (inside the prefix), and h0 knows its container as local.
            let first = try live.ping(from: b.namespace, to: a.address, count: 3)
            #expect(first.received >= 1, "\(first)")
            let before = try live.stats(0)
            #expect(before.peers.map(\.address) == [h1.underlay], "\(before)")
            #expect(try before.counter("peers_learned") == 1, "\(before)")
            let fdbBefore = try live.fdb(0)

            // 1. 300 spoofed sources outside 10.99.0.0/29, each a well-formed VXLAN packet.
            let sender = PacketSender(live: live)
            let outside = (0..<Self.spoofedSources).map { i in
                let source = "10.100.\(i / 250).\(i % 250 + 1)"
                let mac = String(format: "02:ba:d1:00:%02x:%02x", i >> 8, i & 0xff)
                return PacketSender.Batch.raw(destination: h0.underlay,
                                              packet: Self.vxlan(from: source, to: h0.underlay, inner: Self.frame(from: mac)), count: 1)
            }
            let dropsBefore = try Self.kernelUDPDrops(live, h0.namespace)
            let tapBefore = try live.linkStatistics(h0.namespace, "ferry0")
            try sender.send(from: h1.namespace, outside, name: "outside")
            let expected = UInt64(Self.spoofedSources - (try Self.kernelUDPDrops(live, h0.namespace) - dropsBefore))
            let refused = try live.waitForStats(0) { try $0.drop("peer_not_accepted") >= expected }
            #expect(try refused.drop("peer_not_accepted") == expected, "sent \(Self.spoofedSources): \(refused)")
            #expect(expected >= UInt64(Self.spoofedSources - 10), "the kernel dropped many of them: \(expected) arrived")
            #expect(refused.peers.map(\.address) == [h1.underlay], "the peer table changed: \(refused)")
            #expect(try refused.counter("peers_learned") == 1, "\(refused)")
            #expect(try refused.drop("unknown_peer") == before.drop("unknown_peer"), "\(refused)")
            let fdbAfter = try live.fdb(0)
            #expect(fdbAfter.map(\.mac) == fdbBefore.map(\.mac), "MACs learned from refused sources: \(fdbAfter.map(\.mac))")
            // Nothing reached h0's bridge: no frame the outsiders sent came out of the TAP.
            let tapAfter = try live.linkStatistics(h0.namespace, "ferry0")
            #expect((tapAfter["rx.packets"] ?? 0) - (tapBefore["rx.packets"] ?? 0) < 5,
                    "frames reached the bridge: \(tapBefore) -> \(tapAfter)")

            // 2. A source inside the prefix: it first claims h0's container's MAC (refused, and it
            //    does not become a peer by it), then ten MACs of its own, of which it gets four.
            let claimLocal = PacketSender.Batch.raw(destination: h0.underlay,
                                                    packet: Self.vxlan(from: Self.insider, to: h0.underlay, inner: Self.frame(from: a.mac)),
                                                    count: 3)
            let own = (0..<Self.claimedMACs).map { i in
                PacketSender.Batch.raw(destination: h0.underlay,
                                       packet: Self.vxlan(from: Self.insider, to: h0.underlay,
                                                          inner: Self.frame(from: String(format: "02:ba:d2:00:00:%02x", i))), count: 1)
            }
            let drops2 = try Self.kernelUDPDrops(live, h0.namespace)
            try sender.send(from: h1.namespace, [claimLocal] + own, name: "inside")
            #expect(try Self.kernelUDPDrops(live, h0.namespace) == drops2, "the kernel dropped some of the insider's packets")
            let limited = try live.waitForStats(0) {
                try $0.counter("fdb_peer_limit") >= UInt64(Self.claimedMACs - Self.macLimit) && $0.drop("inner_source_mac_local") >= 3
            }
            #expect(try limited.drop("inner_source_mac_local") == 3, "\(limited)")
            #expect(try limited.counter("fdb_peer_limit") == UInt64(Self.claimedMACs - Self.macLimit), "\(limited)")
            #expect(limited.peer(Self.insider)?.learned == true, "\(limited)")
            #expect(limited.peer(Self.insider)?.rxPackets == UInt64(Self.claimedMACs), "its frames are delivered: \(limited)")
            let fdb = try live.fdb(0)
            let behindInsider = fdb.filter { Live.sameAddress($0.peer, Self.insider) }.map(\.mac)
            #expect(behindInsider.count == Self.macLimit, "fdb behind \(Self.insider): \(behindInsider); all: \(fdb.map { "\($0.mac)->\($0.peer)" })")
            #expect(fdb.peer(of: a.mac) == nil, "h0's own container was learned behind a peer: \(fdb.map { "\($0.mac)->\($0.peer)" })")
            // The bridge did not move the container's port to the TAP either.
            let bridgeFDB = try live.exec(h0.namespace, ["bridge", "fdb", "show", "dev", "ferry0"]).stdout
            #expect(!bridgeFDB.lowercased().contains(a.mac), "h0's bridge learnt \(a.mac) on the TAP:\n\(bridgeFDB)")
            let after = try live.ping(from: b.namespace, to: a.address, count: 5, interval: 0.1)
            #expect(after.allReceived, "\(after)")

            print("[live acl] outside: sent \(Self.spoofedSources), peer_not_accepted \(try refused.drop("peer_not_accepted")), "
                  + "peers \(refused.peers.count); inside: fdb_peer_limit \(try limited.counter("fdb_peer_limit")), "
                  + "inner_source_mac_local \(try limited.drop("inner_source_mac_local")), MACs behind \(Self.insider) \(behindInsider.count)")
        }
    }
}
