import FerryCapture
import FerryLab
import FerryWire
import Foundation
import Testing

extension LiveLabTests {
    /// Hostile and broken tunnel packets from a third host on the underlay, while a good ping runs
    /// between the two Ferry hosts: each is counted under exactly its drop reason, none reaches the
    /// bridge, and the good traffic does not notice. With `--accept-any-peer`, a well-formed packet
    /// from the stranger is delivered and the stranger becomes a learned peer.
    @Suite struct LiveBadInputTests {
        struct Variant: Sendable, CustomTestStringConvertible {
            var name: String
            var tag: String
            var tunnel: [String]
            var isVXLAN: Bool
            var testDescription: String { name }
        }

        static let variants = [
            Variant(name: "vxlan", tag: "badvx", tunnel: ["--encap", "vxlan", "--vni", "42"], isVXLAN: true),
            Variant(name: "gre", tag: "badgre", tunnel: ["--encap", "gre", "--key", "42"], isVXLAN: false),
        ]

        /// One kind of bad packet, the number sent, and the one reason each must be counted under.
        struct Bad {
            var what: String
            var reason: String
            var batch: PacketSender.Batch
        }

        static let h0 = "10.99.0.1", h1 = "10.99.0.2", intruder = "10.99.0.3"
        static let goodPings = 160

        /// The bad packets for a variant. All but the first claim to come from h0, h1's real peer
        /// (IP_HDRINCL from the intruder), so that only the tunnel header can be why they are dropped.
        static func badPackets(_ v: Variant) -> [Bad] {
            typealias P = HandMadePacket
            func spoofedUDP(_ sport: UInt16, _ payload: [UInt8]) -> [UInt8] {
                P.ipv4(source: h0, destination: h1, protocol: IPProtocol.udp, payload: P.udp(sourcePort: sport, payload: payload))
            }
            func gre(from source: String, _ payload: [UInt8]) -> [UInt8] {
                P.ipv4(source: source, destination: h1, protocol: IPProtocol.gre, payload: payload)
            }
            if v.isVXLAN {
                return [
                    Bad(what: "valid VXLAN from a host that is not a peer", reason: "unknown_peer",
                        batch: .udp(destination: h1, port: 4789, sourcePort: 45001,
                                    payload: P.vxlan(vni: 42, inner: P.markedFrame(1)), count: 5)),
                    Bad(what: "VNI 7 from h0's address", reason: "unexpected_vni",
                        batch: .raw(destination: h1, packet: spoofedUDP(45002, P.vxlan(vni: 7, inner: P.markedFrame(2))), count: 6)),
                    Bad(what: "a 4-byte VXLAN header", reason: "truncated_vxlan",
                        batch: .raw(destination: h1, packet: spoofedUDP(45003, [0x08, 0, 0, 0]), count: 7)),
                    Bad(what: "VXLAN flags without the I bit", reason: "vxlan_missing_i_flag",
                        batch: .raw(destination: h1, packet: spoofedUDP(45004, P.vxlan(word0: 0, vni: 42, inner: P.markedFrame(4))), count: 8)),
                    Bad(what: "a reserved VXLAN flag bit", reason: "vxlan_reserved_bits_set",
                        batch: .raw(destination: h1, packet: spoofedUDP(45005, P.vxlan(word0: 0x0C00_0000, vni: 42, inner: P.markedFrame(5))), count: 4)),
                    Bad(what: "the last reserved VXLAN byte set", reason: "vxlan_reserved_bits_set",
                        batch: .raw(destination: h1, packet: spoofedUDP(45006, P.vxlan(vni: 42, lastByte: 1, inner: P.markedFrame(6))), count: 5)),
                ]
            }
            return [
                Bad(what: "valid GRE from a host that is not a peer", reason: "unknown_peer",
                    batch: .raw(destination: h1, packet: gre(from: intruder, P.gre(flags: 0x2000, key: 42, inner: P.markedFrame(1))), count: 5)),
                Bad(what: "GRE key 43 from h0's address", reason: "unexpected_gre_key",
                    batch: .raw(destination: h1, packet: gre(from: h0, P.gre(flags: 0x2000, key: 43, inner: P.markedFrame(2))), count: 6)),
                Bad(what: "GRE without a key from h0's address", reason: "unexpected_gre_key",
                    batch: .raw(destination: h1, packet: gre(from: h0, P.gre(flags: 0, key: nil, inner: P.markedFrame(3))), count: 2)),
                Bad(what: "GRE protocol 0x0800", reason: "gre_unsupported_protocol",
                    batch: .raw(destination: h1, packet: gre(from: h0, P.gre(flags: 0x2000, protocolType: EtherType.ipv4, key: 42,
                                                                             inner: P.markedFrame(4))), count: 7)),
                Bad(what: "GRE version 1", reason: "gre_bad_version",
                    batch: .raw(destination: h1, packet: gre(from: h0, P.gre(flags: 0x2001, key: 42, inner: P.markedFrame(5))), count: 8)),
                Bad(what: "GRE routing bit", reason: "gre_routing_bit_set",
                    batch: .raw(destination: h1, packet: gre(from: h0, P.gre(flags: 0x6000, key: 42, inner: P.markedFrame(6))), count: 4)),
            ]
        }

        /// From the intruder's own address: packets of the wrong tunnel, packets of this tunnel whose
        /// inner frame has a group (multicast) source MAC, and good ones.
        static func strangerPackets(_ v: Variant, count: Int) -> (wrong: PacketSender.Batch, groupSource: PacketSender.Batch, good: PacketSender.Batch) {
            typealias P = HandMadePacket
            var group = P.markedFrame(11)
            group[6] |= 0x01
            if v.isVXLAN {
                return (.udp(destination: h1, port: 4789, sourcePort: 45009, payload: P.vxlan(vni: 7, inner: P.markedFrame(9)), count: count),
                        .udp(destination: h1, port: 4789, sourcePort: 45011, payload: P.vxlan(vni: 42, inner: group), count: count),
                        .udp(destination: h1, port: 4789, sourcePort: 45010, payload: P.vxlan(vni: 42, inner: P.markedFrame(10)), count: count))
            }
            func gre(_ key: UInt32, _ inner: [UInt8]) -> PacketSender.Batch {
                .raw(destination: h1, packet: P.ipv4(source: intruder, destination: h1, protocol: IPProtocol.gre,
                                                     payload: P.gre(flags: 0x2000, key: key, inner: inner)), count: count)
            }
            return (gre(43, P.markedFrame(9)), gre(42, group), gre(42, P.markedFrame(10)))
        }

        static func count(_ batch: PacketSender.Batch) -> Int {
            switch batch {
            case .raw(_, _, let n), .udp(_, _, _, _, let n): n
            }
        }

        @Test(arguments: variants)
        func badPacketsAreCountedAndNeverDelivered(_ v: Variant) throws {
            let live = try LiveLab(tag: v.tag, hosts: 3, withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let (host0, host1, host2) = (live.host(0), live.host(1), live.host(2))
            let (a, b) = (host0.containers[0], host1.containers[0])
            let sender = PacketSender(live: live)

            // h0 and h1 are each other's only peer; h2 runs no Ferry: it is the intruder.
            try live.startFerry(on: 0, peers: [1], tunnel: v.tunnel)
            try live.startFerry(on: 1, peers: [0], tunnel: v.tunnel)
            let warmUp = try live.ping(from: a.namespace, to: b.address, count: 3)
            try #require(warmUp.received >= 1, "no ping through Ferry (\(v.name)): \(warmUp)")
            let start = try live.stats(1)
            try #require(start.totalDrops == 0, "drops before any bad packet: \(start.drops())")

            // A good ping runs all through the attack; the TAP on h1 is watched.
            let tap = try Tcpdump(live, host1.namespace, interface: "ferry0", file: live.file("tap.pcap"))
            let pingLog = live.file("ping.log")
            let ping = try live.lab.spawn(a.namespace, ["ping", "-n", "-c", "\(Self.goodPings)", "-i", "0.05", "-W", "2", b.address], log: pingLog)
            let answered = Lab.waitUntil(timeout: 10) { ((try? String(contentsOfFile: pingLog, encoding: .utf8)) ?? "").contains("bytes from") }
            try #require(answered, "the good ping gets no reply: \((try? String(contentsOfFile: pingLog, encoding: .utf8)) ?? "")")

            let bad = Self.badPackets(v)
            try sender.send(from: host2.namespace, bad.map(\.batch), name: "bad-\(v.name)")
            var expected: [String: UInt64] = [:]
            for x in bad { expected[x.reason, default: 0] += UInt64(Self.count(x.batch)) }
            let total = expected.values.reduce(0, +)
            _ = try live.waitForStats(1) { $0.totalDrops >= total }
            let pingStillRunning = ping.isRunning
            // A moment more, so that a packet counted twice would show.
            usleep(300_000)
            let stats = try live.stats(1)

            for (reason, n) in expected.sorted(by: { $0.key < $1.key }) {
                let what = bad.filter { $0.reason == reason }.map(\.what).joined(separator: ", ")
                #expect(try stats.drop(reason) == n, "\(v.name): \(reason) counted \(stats.drops[reason] ?? 0), sent \(n) (\(what))")
            }
            print("\(v.name): h1's drops after the bad packets: "
                  + stats.drops().sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
            #expect(stats.totalDrops == total, "\(v.name): every bad packet counts once, under its reason: \(stats.drops())")
            #expect(stats.peers.map(\.address) == [Self.h0], "\(v.name): peers of h1: \(stats)")
            #expect(try stats.counter("peers_learned") == 0)

            // The good ping went on through it all.
            #expect(pingStillRunning, "the good ping ended before the bad packets were all counted; lengthen it")
            #expect(Lab.waitUntil(timeout: 30) { !ping.isRunning }, "ping did not finish")
            let result = PingResult(output: (try? String(contentsOfFile: pingLog, encoding: .utf8)) ?? "")
            #expect(result.transmitted == Self.goodPings && result.received == result.transmitted,
                    "\(v.name): the good ping lost packets during the attack: \(result)")

            // Not one bad inner frame reached h1's bridge side.
            let tapFrames = try tap.stop()
            let leaked = tapFrames.filter { FrameFields.mac($0.bytes, at: 6).hasPrefix("02:ba:d0") || FrameFields.etherType($0.bytes) == 0x88b5 }
            #expect(leaked.isEmpty, "\(v.name): bad inner frames written to h1's TAP: \(leaked.map { FrameFields.describe($0.bytes) })")
            let echoes = tapFrames.filter { FrameFields.ipv4($0.bytes)?.proto == IPProtocol.icmp }
            #expect(echoes.count >= 2 * Self.goodPings, "the TAP capture saw only \(echoes.count) ICMP frames: is it watching?")

            // --accept-any-peer: a packet of the wrong tunnel from the stranger is still dropped and
            // makes no peer; nor does one whose inner frame is refused (a group source MAC); a good
            // one is delivered, and the stranger becomes a learned peer.
            live.stopFerry(on: 1)
            try live.startFerry(on: 1, peers: [0], tunnel: v.tunnel, extra: ["--accept-any-peer"], log: "ferry-h1-any.log")
            let tapAny = try Tcpdump(live, host1.namespace, interface: "ferry0", file: live.file("tap-any.pcap"))
            let again = try live.ping(from: a.namespace, to: b.address, count: 3)
            #expect(again.received >= 1, "no ping after restarting h1's Ferry with --accept-any-peer: \(again)")
            let stranger = Self.strangerPackets(v, count: 3)
            let wrongReason = v.isVXLAN ? "unexpected_vni" : "unexpected_gre_key"
            try sender.send(from: host2.namespace, [stranger.wrong], name: "stranger-wrong-\(v.name)")
            let afterWrong = try live.waitForStats(1) { try $0.drop(wrongReason) >= 3 }
            #expect(try afterWrong.drop(wrongReason) == 3, "\(afterWrong)")
            #expect(afterWrong.peer(Self.intruder) == nil, "a packet of another tunnel made the stranger a peer: \(afterWrong)")

            try sender.send(from: host2.namespace, [stranger.groupSource], name: "stranger-group-\(v.name)")
            let afterGroup = try live.waitForStats(1) { try $0.drop("inner_source_mac_invalid") >= 3 }
            #expect(try afterGroup.drop("inner_source_mac_invalid") == 3, "\(afterGroup)")
            // A packet Ferry drops must not enrol its sender as a peer: a peer gets every flooded
            // frame from then on, and the peer table (never aged) has a fixed number of slots.
            #expect(afterGroup.peer(Self.intruder) == nil,
                    "\(v.name): packets dropped as inner_source_mac_invalid made their sender a learned peer: \(afterGroup)")

            try sender.send(from: host2.namespace, [stranger.good], name: "stranger-good-\(v.name)")
            let afterGood = try live.waitForStats(1) { $0.rx(Self.intruder) >= 3 }
            let learned = afterGood.peer(Self.intruder)
            #expect(learned?.learned == true, "\(v.name): the stranger is not a learned peer: \(afterGood)")
            #expect(learned?.rxPackets == 3, "\(v.name): \(afterGood)")
            #expect(try afterGood.counter("peers_learned") == 1, "\(afterGood)")
            #expect(afterGood.totalDrops == 6, "\(afterGood.drops())")
            let fdb = try live.fdb(1)
            #expect(fdb.peer(of: HandMadePacket.markedSource(10)) == Self.intruder, "fdb: \(fdb.map { "\($0.mac)->\($0.peer)" })")
            usleep(200_000)
            let delivered = try tapAny.stop().filter { FrameFields.etherType($0.bytes) == 0x88b5 }
            #expect(delivered.map(\.bytes) == Array(repeating: HandMadePacket.markedFrame(10), count: 3),
                    "\(v.name): frames from the stranger on h1's TAP: \(delivered.map { FrameFields.describe($0.bytes) })")
            let after = try live.ping(from: a.namespace, to: b.address, count: 3)
            #expect(after.received == 3, "\(after)")
        }

        /// RFC 6040 through real sockets: tunnel packets whose outer header a congested router
        /// marked CE (sent from the third host in h0's name) reach h1's bridge with CE in the
        /// inner IP header; those whose inner packet is not ECN-capable are dropped and counted.
        @Test(arguments: variants)
        func congestionMarksReachTheInnerHeader(_ v: Variant) throws {
            let live = try LiveLab(tag: v.tag + "e", hosts: 3, withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let (host0, host1, host2) = (live.host(0), live.host(1), live.host(2))
            try live.startFerry(on: 0, peers: [1], tunnel: v.tunnel)
            try live.startFerry(on: 1, peers: [0], tunnel: v.tunnel)
            let warmUp = try live.ping(from: host0.containers[0].namespace, to: host1.containers[0].address, count: 2)
            try #require(warmUp.received >= 1, "no ping through Ferry (\(v.name)): \(warmUp)")

            // Inner IPv4 UDP broadcasts from a marked MAC: ECT(0), and not ECN-capable.
            func inner(_ marker: UInt8, ecn: UInt8) -> [UInt8] {
                FrameBuilder.frame(destinationMAC: .broadcast, sourceMAC: MACAddress(0x02, 0xba, 0xd0, 0, 0, marker),
                                   source: .v4(IPv4Address(10, 18, 0, 99)), destination: .v4(IPv4Address(10, 18, 255, 255)),
                                   tos: 0x20 | ecn, payload: .udp(sourcePort: 9, destinationPort: 9, data: FrameBuilder.pattern(32)))
            }
            func congested(_ frame: [UInt8], sport: UInt16) -> PacketSender.Batch {
                let tunnel = v.isVXLAN ? HandMadePacket.udp(sourcePort: sport, payload: HandMadePacket.vxlan(vni: 42, inner: frame))
                                       : HandMadePacket.gre(flags: 0x2000, key: 42, inner: frame)
                return .raw(destination: Self.h1, packet: HandMadePacket.ipv4(source: Self.h0, destination: Self.h1,
                                                                          protocol: v.isVXLAN ? IPProtocol.udp : IPProtocol.gre,
                                                                          tos: ECN.ce, payload: tunnel), count: 4)
            }
            let tap = try Tcpdump(live, host1.namespace, interface: "ferry0", file: live.file("tap.pcap"))
            try PacketSender(live: live).send(from: host2.namespace,
                                                [congested(inner(0x31, ecn: ECN.ect0), sport: 45100),
                                                 congested(inner(0x32, ecn: ECN.notECT), sport: 45101)], name: "ecn-\(v.name)")
            let stats = try live.waitForStats(1) { try $0.drop("ecn_ce_on_not_ect") >= 4 }
            usleep(200_000)
            let frames = try tap.stop().filter { FrameFields.mac($0.bytes, at: 6).hasPrefix("02:ba:d0") }
            let marked = frames.filter { FrameFields.mac($0.bytes, at: 6) == "02:ba:d0:00:00:31" }
            #expect(marked.count == 4, "\(v.name): ECT(0) packets on h1's TAP: \(frames.map { FrameFields.describe($0.bytes) })")
            #expect(marked.allSatisfy { $0.bytes[15] == 0x20 | ECN.ce }, "\(v.name): the inner TOS should carry CE: \(marked.map { $0.bytes[15] })")
            #expect(marked.allSatisfy { f in f.bytes.withUnsafeBytes { InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: $0[14..<34])) } },
                    "\(v.name): inner IPv4 header checksums after marking")
            #expect(!frames.contains { FrameFields.mac($0.bytes, at: 6) == "02:ba:d0:00:00:32" },
                    "\(v.name): a not-ECT packet under CE reached the bridge")
            #expect(try stats.drop("ecn_ce_on_not_ect") == 4 && stats.totalDrops == 4, "\(v.name): \(stats.drops())")
        }
    }
}
