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

    static let decapsulationReasons: Set<String> = ["truncated_vxlan", "vxlan_missing_i_flag", "vxlan_reserved_bits_set",
                                                     "unexpected_vni", "inner_frame_too_short"]

    static let classes: [Class] = [
        Class(name: "random", fate: .ferryDrops, reasons: decapsulationReasons,
              what: "random bytes (0-1400) as the UDP payload to port 4789, in the peer's name"),
        Class(name: "truncated", fate: .ferryDrops, reasons: ["truncated_vxlan", "inner_frame_too_short"],
              what: "a good VXLAN packet cut to 0-21 bytes of UDP payload"),
        Class(name: "corrupted", fate: .ferryDrops, reasons: ["vxlan_missing_i_flag", "vxlan_reserved_bits_set"],
              what: "a good VXLAN packet with one bit of the flags or reserved fields flipped"),
        Class(name: "wrong_vni", fate: .ferryDrops, reasons: ["unexpected_vni"], what: "VNI other than 42"),
        Class(name: "unknown_source", fate: .ferryDrops, reasons: ["peer_not_accepted"],
              what: "a good packet from the intruder's address or a spoofed 10.100.0.0/16 one, outside --accept-cidr"),
        Class(name: "local_mac", fate: .ferryDrops, reasons: ["inner_source_mac_local"],
              what: "a good packet in the peer's name whose inner source MAC is the receiving host's container's"),
        Class(name: "group_mac", fate: .ferryDrops, reasons: ["inner_source_mac_invalid"],
              what: "a good packet in the peer's name whose inner source MAC is a group address"),
        Class(name: "oversized", fate: .ferryDrops, reasons: ["oversize_frame"],
              what: "a good packet in the peer's name with a 4000-byte inner frame, in three IP fragments"),
        Class(name: "bad_checksum", fate: .kernelDrops, reasons: [],
              what: "a good packet in the peer's name with a wrong UDP checksum"),
        Class(name: "incomplete_fragment", fate: .kernelDrops, reasons: [],
              what: "the first IP fragment of a good packet, never completed"),
        Class(name: "random_ip", fate: .kernelDrops, reasons: [],
              what: "random bytes in an IPv4 packet of a protocol nobody listens to"),
        Class(name: "random_frame", fate: .kernelDrops, reasons: [],
              what: "random bytes as an Ethernet frame of an unknown EtherType, to the host's underlay MAC"),
    ]

    /// Every hostile inner frame carries this EtherType (IEEE local experimental 2) and this
    /// text, so that a capture can tell it whatever its MACs.
    static let etherType: UInt16 = 0x88b6
    static let marker = "ferry-hostile"

    /// argv: duration seconds, JSON output path, target (underlay IPv4), peer (IPv4 the target
    /// trusts), intruder (own IPv4), target's underlay MAC, a local MAC on the target, VNI,
    /// interface to send frames on.
    static let script = #"""
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
        def vxlan(v, frame, flags=0x08000000, last=0): return struct.pack("!II", flags, (v << 8) | last) + frame
        def csum(b):
            if len(b) % 2: b += b"\0"
            s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
            while s >> 16: s = (s & 0xffff) + (s >> 16)
            return ~s & 0xffff
        def ip(src, dst, proto, payload, ident=0, frag=0):
            # The kernel fills in the total length and the header checksum (IP_HDRINCL).
            return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0,
                               socket.inet_aton(src), socket.inet_aton(dst)) + payload
        def udp(src, dst, payload, sport=47000, checksum=None):
            u = struct.pack("!HHHH", sport, 4789, 8 + len(payload), 0) + payload
            if checksum == "bad":
                pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(u))
                good = csum(pseudo + u) or 0xffff
                bad = 0x0001 if good != 0x0001 else 0x0002
                u = u[:6] + struct.pack("!H", bad) + u[8:]
            return u
        good = vxlan(vni, inner())
        items = []  # (class, kind, bytes...) kinds: ip (one packet), frags (several), frame (AF_PACKET)
        ident = [0]
        def next_id(lo):
            ident[0] = (ident[0] + 1) & 0x7fff
            return lo | ident[0]
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
                src = intruder if i % 24 == 4 else "10.100.%d.%d" % (rnd.randint(0, 255), rnd.randint(1, 254))
                items.append(("unknown_source", "ip", ip(src, target, 17, udp(src, target, good))))
            elif k == 5:
                items.append(("local_mac", "ip", ip(peer, target, 17, udp(peer, target, vxlan(vni, inner(mac(local_mac)))))))
            elif k == 6:
                items.append(("group_mac", "ip", ip(peer, target, 17, udp(peer, target, vxlan(vni, inner(bytes([3, 0xba, 0xd0, 0, 0, 6])))))))
            elif k == 7:
                u = udp(peer, target, vxlan(vni, inner(size=4000)))
                n = next_id(0)
                frags = [ip(peer, target, 17, u[o:o + 1480], n, (o // 8) | (0x2000 if o + 1480 < len(u) else 0))
                         for o in range(0, len(u), 1480)]
                items.append(("oversized", "frags", frags))
            elif k == 8:
                items.append(("bad_checksum", "ip", ip(peer, target, 17, udp(peer, target, good, checksum="bad"))))
            elif k == 9:
                u = udp(peer, target, vxlan(vni, inner(size=2000)))
                items.append(("incomplete_fragment", "ip", ip(peer, target, 17, u[:1480], next_id(0x8000), 0x2000)))
            elif k == 10:
                proto = rnd.choice([143, 144, 145, 146, 147, 148, 150, 200, 252, 253])
                items.append(("random_ip", "ip", ip(intruder, target, proto, os.urandom(rnd.randint(0, 1400)))))
            else:
                t = rnd.choice([0x88b7, 0x1234, 0x9999, 0xabcd])
                items.append(("random_frame", "frame", mac(target_mac) + bytes([2, 0xba, 0xd0, 0, 0, 9]) + struct.pack("!H", t)
                              + os.urandom(rnd.randint(46, 1400))))
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
