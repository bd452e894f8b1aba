import Foundation

// The generator of the hostile-traffic test: a bounded Python loop on the intruder host that
// sends, as fast as it can for a given time, a mix of hostile packets towards one Ferry host,
// and reports how many of each class it sent. Every class is defined by what must become of it:
// dropped by Ferry under a reason (and never delivered), or dropped by the kernel before Ferry.

enum HostileTraffic {
    /// The classes, with what becomes of them.
    enum Fate { case ferryDrops, kernelDrops }

    struct Class {
        var name: String
        var fate: Fate
        /// The drop reasons Ferry may count it under (empty for the kernel's classes).
        var reasons: Set<String>
        var what: String
    }

    static let vxlanDecapsulationReasons: Set<String> = ["truncated_vxlan", "vxlan_missing_i_flag", "vxlan_reserved_bits_set",
                                                          "unexpected_vni", "inner_frame_too_short"]

    /// The classes the attack on a tunnel of this kind sends, in the order the generator cycles
    /// through them.
    static func classes(_ tunnel: LiveTunnel) -> [Class] {
        switch tunnel {
        case .vxlan: vxlanClasses
        case .gre: greClasses
        }
    }

    static let vxlanClasses: [Class] = [
        Class(name: "random", fate: .ferryDrops, reasons: vxlanDecapsulationReasons,
              what: "random bytes (0-1400) as the UDP payload to port 4789, in the peer's name"),
        Class(name: "truncated", fate: .ferryDrops, reasons: ["truncated_vxlan", "inner_frame_too_short"],
              what: "a good VXLAN packet cut to 0-21 bytes of UDP payload"),
        Class(name: "corrupted", fate: .ferryDrops, reasons: ["vxlan_missing_i_flag", "vxlan_reserved_bits_set"],
              what: "a good VXLAN packet with one bit of the flags or reserved fields flipped"),
        Class(name: "wrong_vni", fate: .ferryDrops, reasons: ["unexpected_vni"], what: "VNI other than 42"),
    ] + commonFerryClasses + [
        Class(name: "bad_checksum", fate: .kernelDrops, reasons: [],
              what: "a good packet in the peer's name with a wrong UDP checksum"),
    ] + commonKernelClasses

    /// GRE (key 42): what the generator's GRE items are, and what Ferry's decapsulator makes of
    /// each (`Decapsulator.popGRE`: version, routing bit, reserved bits 4-5 and the protocol
    /// type first, then the fields the flags announce, the inner frame, the key, the checksum).
    static let greClasses: [Class] = [
        Class(name: "random", fate: .ferryDrops,
              reasons: ["truncated_gre", "gre_bad_version", "gre_routing_bit_set", "gre_reserved_flags_set", "gre_unsupported_protocol"],
              what: "random bytes (0-1400) as a GRE packet in the peer's name, the protocol type never 0x6558"),
        Class(name: "truncated", fate: .ferryDrops, reasons: ["truncated_gre", "inner_frame_too_short"],
              what: "a good GRE packet (key; or checksum, key and sequence) cut inside its header or inner Ethernet header"),
        Class(name: "corrupted", fate: .ferryDrops,
              reasons: ["bad_gre_checksum", "gre_routing_bit_set", "unexpected_gre_key", "gre_reserved_flags_set", "gre_bad_version",
                        "gre_unsupported_protocol"],
              what: "a good GRE packet with one bit flipped: C, R, K, bits 4-5, the version or the protocol type"),
        Class(name: "wrong_key", fate: .ferryDrops, reasons: ["unexpected_gre_key"], what: "a key other than 42, or none"),
        Class(name: "gre_checksum", fate: .ferryDrops, reasons: ["bad_gre_checksum"],
              what: "the checksum flag with a checksum that does not verify (key right)"),
        Class(name: "unknown_protocol", fate: .ferryDrops, reasons: ["gre_unsupported_protocol"],
              what: "a protocol type other than 0x6558: IPv4, IPv6, ARP, MPLS, PPP, ERSPAN"),
        Class(name: "sequence", fate: .ferryDrops, reasons: ["inner_source_mac_local"],
              what: "checksum (right), key and sequence number all present, a good header whose inner source MAC is the local container's"),
    ] + commonFerryClasses + commonKernelClasses

    /// Classes both tunnels have: well-formed packets refused after decapsulation.
    static let commonFerryClasses: [Class] = [
        Class(name: "unknown_source", fate: .ferryDrops, reasons: ["peer_not_accepted"],
              what: "a good packet from the intruder's address or a spoofed 10.100.0.0/16 one, outside --accept-cidr"),
        Class(name: "local_mac", fate: .ferryDrops, reasons: ["inner_source_mac_local"],
              what: "a good packet in the peer's name whose inner source MAC is the receiving host's container's"),
        Class(name: "group_mac", fate: .ferryDrops, reasons: ["inner_source_mac_invalid"],
              what: "a good packet in the peer's name whose inner source MAC is a group address"),
        Class(name: "oversized", fate: .ferryDrops, reasons: ["oversize_frame"],
              what: "a good packet in the peer's name with a 4000-byte inner frame, in three IP fragments"),
    ]

    /// Classes the kernel drops before any socket of Ferry's sees them.
    static let commonKernelClasses: [Class] = [
        Class(name: "incomplete_fragment", fate: .kernelDrops, reasons: [],
              what: "the first IP fragment of a good packet, never completed"),
        Class(name: "random_ip", fate: .kernelDrops, reasons: [],
              what: "random bytes in an IPv4 packet of a protocol nobody listens to"),
        Class(name: "random_frame", fate: .kernelDrops, reasons: [],
              what: "random bytes as an Ethernet frame of an unknown EtherType, to the host's underlay MAC"),
    ]

    /// The classes linked by a reason they share, each group with the union of its reasons: a
    /// group's reasons together count exactly its packets (when nothing was lost on the way),
    /// though a reason shared within it cannot be told apart by class.
    static func groups(_ classes: [Class]) -> [(classes: [String], reasons: Set<String>)] {
        var groups: [(classes: [String], reasons: Set<String>)] = []
        for c in classes where c.fate == .ferryDrops {
            var merged = (classes: [c.name], reasons: c.reasons)
            groups.removeAll { g in
                guard !g.reasons.isDisjoint(with: merged.reasons) else { return false }
                merged = (g.classes + merged.classes, g.reasons.union(merged.reasons))
                return true
            }
            groups.append(merged)
        }
        return groups
    }

    /// Every hostile inner frame carries this EtherType (IEEE local experimental 2) and this
    /// text, so that a capture can tell it whatever its MACs.
    static let etherType: UInt16 = 0x88b6
    static let marker = "ferry-hostile"

    /// The generator for a tunnel. argv: duration seconds, JSON output path, target (underlay
    /// IPv4), peer (IPv4 the target trusts), intruder (own IPv4), target's underlay MAC, a local
    /// MAC on the target, VNI or key, interface to send frames on.
    static func script(_ tunnel: LiveTunnel) -> String {
        prelude + (tunnel == .vxlan ? vxlanItems : greItems) + sendLoop
    }

    /// Arguments and the packet makers both tunnels use.
    static let prelude = #"""
        import json, os, random, socket, struct, sys, time
        duration, out = float(sys.argv[1]), sys.argv[2]
        target, peer, intruder, target_mac, local_mac, vni, ifname = sys.argv[3:10]
        vni = int(vni)
        ETH_TYPE, MARK = 0x88b6, b"ferry-hostile"
        rnd = random.Random(1212)
        def mac(s): return bytes(int(x, 16) for x in s.split(":"))
        def inner(src=bytes([2, 0xba, 0xd0, 0, 0, 1]), size=60):
            f = b"\xff" * 6 + src + struct.pack("!H", ETH_TYPE) + MARK
            return f + bytes(max(0, size - len(f)))
        def csum(b):
            if len(b) % 2: b += b"\0"
            s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
            while s >> 16: s = (s & 0xffff) + (s >> 16)
            return ~s & 0xffff
        def ip(src, dst, proto, payload, ident=0, frag=0):
            # The kernel fills in the total length and the header checksum (IP_HDRINCL).
            return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0,
                               socket.inet_aton(src), socket.inet_aton(dst)) + payload
        items = []  # (class, kind, bytes...) kinds: ip (one packet), frags (several), frame (AF_PACKET)
        ident = [0]
        def next_id(lo):
            ident[0] = (ident[0] + 1) & 0x7fff
            return lo | ident[0]
        def fragments(proto, payload):
            n = next_id(0)
            return [ip(peer, target, proto, payload[o:o + 1480], n, (o // 8) | (0x2000 if o + 1480 < len(payload) else 0))
                    for o in range(0, len(payload), 1480)]
        def random_ip():
            proto = rnd.choice([143, 144, 145, 146, 147, 148, 150, 200, 252, 253])
            return ("random_ip", "ip", ip(intruder, target, proto, os.urandom(rnd.randint(0, 1400))))
        def random_frame():
            t = rnd.choice([0x88b7, 0x1234, 0x9999, 0xabcd])
            return ("random_frame", "frame", mac(target_mac) + bytes([2, 0xba, 0xd0, 0, 0, 9]) + struct.pack("!H", t)
                    + os.urandom(rnd.randint(46, 1400)))
        def spoofed(i): return intruder if i % 24 == 4 else "10.100.%d.%d" % (rnd.randint(0, 255), rnd.randint(1, 254))

        """#

    /// VXLAN's twelve classes, in `vxlanClasses`' order.
    static let vxlanItems = #"""
        def vxlan(v, frame, flags=0x08000000, last=0): return struct.pack("!II", flags, (v << 8) | last) + frame
        def udp(src, dst, payload, sport=47000, checksum=None):
            u = struct.pack("!HHHH", sport, 4789, 8 + len(payload), 0) + payload
            if checksum == "bad":
                pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(u))
                good = csum(pseudo + u) or 0xffff
                bad = 0x0001 if good != 0x0001 else 0x0002
                u = u[:6] + struct.pack("!H", bad) + u[8:]
            return u
        good = vxlan(vni, inner())
        for i in range(4096):
            k = i % 12
            if k == 0:
                p = bytearray(os.urandom(rnd.randint(0, 1400)))
                if p and p[0] == 0x08: p[0] = 0x09
                items.append(("random", "ip", ip(peer, target, 17, udp(peer, target, bytes(p)))))
            elif k == 1:
                items.append(("truncated", "ip", ip(peer, target, 17, udp(peer, target, good[:rnd.randint(0, 21)]))))
            elif k == 2:
                b = bytearray(good)
                pos = rnd.choice([0, 1, 2, 3, 7])
                b[pos] ^= 1 << rnd.randint(0, 7)
                items.append(("corrupted", "ip", ip(peer, target, 17, udp(peer, target, bytes(b)))))
            elif k == 3:
                v = rnd.randint(0, (1 << 24) - 1)
                if v == vni: v += 1
                items.append(("wrong_vni", "ip", ip(peer, target, 17, udp(peer, target, vxlan(v, inner())))))
            elif k == 4:
                src = spoofed(i)
                items.append(("unknown_source", "ip", ip(src, target, 17, udp(src, target, good))))
            elif k == 5:
                items.append(("local_mac", "ip", ip(peer, target, 17, udp(peer, target, vxlan(vni, inner(mac(local_mac)))))))
            elif k == 6:
                items.append(("group_mac", "ip", ip(peer, target, 17, udp(peer, target, vxlan(vni, inner(bytes([3, 0xba, 0xd0, 0, 0, 6])))))))
            elif k == 7:
                items.append(("oversized", "frags", fragments(17, udp(peer, target, vxlan(vni, inner(size=4000))))))
            elif k == 8:
                items.append(("bad_checksum", "ip", ip(peer, target, 17, udp(peer, target, good, checksum="bad"))))
            elif k == 9:
                u = udp(peer, target, vxlan(vni, inner(size=2000)))
                items.append(("incomplete_fragment", "ip", ip(peer, target, 17, u[:1480], next_id(0x8000), 0x2000)))
            elif k == 10:
                items.append(random_ip())
            else:
                items.append(random_frame())

        """#

    /// GRE's fourteen classes, in `greClasses`' order. A good packet has the K bit and the key;
    /// bits 6-12 of the flags (reserved, ignored by receivers) and the S bit are never flipped
    /// alone, since either leaves a packet that a receiver may take.
    static let greItems = #"""
        C, R, K, S = 0x8000, 0x4000, 0x2000, 0x1000
        def gre(frame, flags=K, key=None, proto=0x6558, seq=0, checksum="good"):
            key = vni if key is None else key
            h = struct.pack("!HH", flags, proto)
            if flags & C: h += b"\0\0\0\0"
            if flags & K: h += struct.pack("!I", key)
            if flags & S: h += struct.pack("!I", seq)
            g = h + frame
            if flags & C:
                value = csum(g)
                if checksum == "bad": value = value ^ (1 << rnd.randint(0, 15))
                g = g[:4] + struct.pack("!H", value) + g[6:]
            return g
        good = gre(inner())
        for i in range(4096):
            k = i % 14
            if k == 0:
                p = bytearray(os.urandom(rnd.randint(0, 1400)))
                if len(p) >= 4 and p[2] == 0x65 and p[3] == 0x58: p[3] = 0x59
                items.append(("random", "ip", ip(peer, target, 47, bytes(p))))
            elif k == 1:
                g = good if i % 28 == 1 else gre(inner(), flags=C | K | S, seq=i)
                items.append(("truncated", "ip", ip(peer, target, 47, g[:rnd.randint(0, len(g) - len(inner()) + 13)])))
            elif k == 2:
                b = bytearray(good)
                bit = rnd.choice([15, 14, 13, 11, 10, 0, 1, 2, 16 + rnd.randint(0, 15)])
                b[3 - (bit - 16) // 8 if bit >= 16 else 1 - bit // 8] ^= 1 << (bit % 8)
                items.append(("corrupted", "ip", ip(peer, target, 47, bytes(b))))
            elif k == 3:
                key = rnd.randint(0, (1 << 32) - 1)
                if key == vni: key += 1
                g = gre(inner(), flags=0) if i % 42 == 3 else gre(inner(), key=key)
                items.append(("wrong_key", "ip", ip(peer, target, 47, g)))
            elif k == 4:
                items.append(("gre_checksum", "ip", ip(peer, target, 47, gre(inner(), flags=C | K | (S if i % 28 == 4 else 0), checksum="bad"))))
            elif k == 5:
                proto = rnd.choice([0x0800, 0x86dd, 0x0806, 0x8847, 0x880b, 0x88be])
                items.append(("unknown_protocol", "ip", ip(peer, target, 47, gre(inner(), proto=proto))))
            elif k == 6:
                g = gre(inner(mac(local_mac)), flags=C | K | S, seq=rnd.randint(0, (1 << 32) - 1))
                items.append(("sequence", "ip", ip(peer, target, 47, g)))
            elif k == 7:
                src = spoofed(i)
                items.append(("unknown_source", "ip", ip(src, target, 47, good)))
            elif k == 8:
                items.append(("local_mac", "ip", ip(peer, target, 47, gre(inner(mac(local_mac))))))
            elif k == 9:
                items.append(("group_mac", "ip", ip(peer, target, 47, gre(inner(bytes([3, 0xba, 0xd0, 0, 0, 6]))))))
            elif k == 10:
                items.append(("oversized", "frags", fragments(47, gre(inner(size=4000)))))
            elif k == 11:
                g = gre(inner(size=2000))
                items.append(("incomplete_fragment", "ip", ip(peer, target, 47, g[:1480], next_id(0x8000), 0x2000)))
            elif k == 12:
                items.append(random_ip())
            else:
                items.append(random_frame())

        """#

    /// Sends the items round and round until the time is up, and reports.
    static let sendLoop = #"""
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        link = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        link.bind((ifname, 0))
        dest = (target, 0)
        sent = {c: 0 for c, _, _ in items}
        wire = 0
        errors = 0
        start = time.monotonic()
        deadline = start + duration
        i = 0
        n = len(items)
        while True:
            if (i & 255) == 0 and time.monotonic() >= deadline:
                break
            c, kind, data = items[i % n]
            i += 1
            try:
                if kind == "ip":
                    raw.sendto(data, dest)
                    wire += 1
                elif kind == "frags":
                    for f in data:
                        raw.sendto(f, dest)
                        wire += 1
                else:
                    link.send(data)
                    wire += 1
                sent[c] += 1
            except OSError:
                # A send the kernel refused (ENOBUFS) is not sent: not counted.
                errors += 1
        elapsed = time.monotonic() - start
        json.dump({"sent": sent, "wirePackets": wire, "sendErrors": errors, "seconds": elapsed}, open(out, "w"))
        print("hostile done", sum(sent.values()), flush=True)
        """#

    struct Report: Decodable {
        var sent: [String: UInt64]
        var wirePackets: UInt64
        var sendErrors: UInt64
        var seconds: Double
    }
}
