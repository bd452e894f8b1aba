import FerryWire

/// One inner frame as `diffCaptures` sees it: where it is in its capture, when it was seen, its
/// bytes, and the keys that identify it (`identity`, `headerKey`, `contentKey`).
///
/// The matching rule (what makes a frame on one side "the same frame" as one on the other):
///
/// - **identity**: everything a tunnel or a bridge has no business changing. For IPv4: the
///   addresses, the protocol, the IP ID, the fragment offset and MF bit; for IPv6: the
///   addresses and the upper-layer protocol; then the L4 header's invariant part (TCP ports,
///   sequence and acknowledgement numbers and flags; UDP ports and length; ICMP type, code
///   and the identifier and sequence word) and the L4 payload's length and a 64-bit digest
///   (FNV-1a) of its captured bytes. Left out: the Ethernet addresses and any VLAN tag, TTL
///   and hop limit, DSCP and ECN, the DF bit, the IP and L4 checksums, the TCP window and
///   options, the IPv6 flow label, and Ethernet padding (the payload ends where the IP length
///   says). A frame that is not IP is identified by all of its bytes.
/// - **headerKey**: the identity without the payload digest: the same packet with its payload
///   changed (or cut by a shorter snap length).
/// - **contentKey**: the identity without addresses and ports: the same packet rewritten by a
///   NAT on the way.
///
/// Frames are paired by identity first (in capture order, first with first), then what is left
/// by headerKey, then by contentKey; every pair is then compared field by field
/// (`DiffFrame.differences`), so a pair matched on identity may still show a changed TTL.
struct DiffFrame {
    /// 1-based, as tshark numbers frames: the record's place in its capture file.
    var number: Int
    /// Microseconds since the epoch.
    var time: Int64
    var bytes: [UInt8]
    /// The flow it belongs to (`CaptureSummary.flowDescription(of:)`).
    var flow: String
    var identity: [UInt8]
    var headerKey: [UInt8]?
    var contentKey: [UInt8]?

    init(number: Int, time: Int64, bytes: [UInt8]) {
        self.number = number
        self.time = time
        self.bytes = bytes
        let dissected = bytes.withUnsafeBytes { Dissection($0, naming: false) }
        flow = bytes.withUnsafeBytes { CaptureSummary.flowDescription(of: $0) }
        identity = dissected.identity
        headerKey = dissected.headerKey
        contentKey = dissected.contentKey
    }

    /// The fields that differ from `other`'s, in header order, each as (name, "this → other");
    /// then the payload's first differing byte, over what both captured.
    func differences(from other: DiffFrame) -> [(field: String, change: String)] {
        let mine = bytes.withUnsafeBytes { Dissection($0) }, theirs = other.bytes.withUnsafeBytes { Dissection($0) }
        var out: [(String, String)] = []
        for (name, value) in mine.fields {
            let otherValue = theirs.fields.first { $0.name == name }?.value ?? "absent"
            if value != otherValue { out.append((name, "\(value) → \(otherValue)")) }
        }
        for (name, value) in theirs.fields where !mine.fields.contains(where: { $0.name == name }) {
            out.append((name, "absent → \(value)"))
        }
        let pa = mine.payload, pb = theirs.payload
        for k in 0..<min(pa.count, pb.count) where bytes[pa.lowerBound + k] != other.bytes[pb.lowerBound + k] {
            out.append(("payload", "byte \(k): 0x\(hex(bytes[pa.lowerBound + k])) → 0x\(hex(other.bytes[pb.lowerBound + k]))"))
            break
        }
        return out
    }
}

private func hex(_ b: UInt8) -> String { b < 16 ? "0" + String(b, radix: 16) : String(b, radix: 16) }

/// A frame taken apart for `DiffFrame`: its keys, its named header fields (as text), and where
/// its L4 payload is (captured bytes only; Ethernet padding excluded).
struct Dissection {
    var identity: [UInt8] = []
    var headerKey: [UInt8]?
    var contentKey: [UInt8]?
    var fields: [(name: String, value: String)] = []
    var payload: Range<Int> = 0..<0

    /// `naming`: whether to fill `fields` (text for each header field: only for the pairs
    /// compared, not for every frame read).
    init(_ frame: UnsafeRawBufferPointer, naming: Bool = true) {
        func name(_ list: @autoclosure () -> [(String, String)]) { if naming { fields += list() } }
        guard let eth = EthernetView(frame) else {
            identity = [0] + Array(frame)
            return
        }
        name([("ethernet destination", "\(eth.destination)"), ("ethernet source", "\(eth.source)"),
              ("vlan", eth.vlanID.map { "\($0)" } ?? "none")])
        let l3 = eth.payload
        let l3Offset = frame.count - l3.count
        var invariant: [UInt8] = [], addresses: [UInt8] = [], l4Invariant: [UInt8] = [], ports: [UInt8] = []
        var proto: UInt8 = 0, l4Offset = 0, l4End = 0
        switch eth.etherType {
        case EtherType.ipv4:
            guard let ip = IPv4View(l3), ip.headerLength >= 20, ip.headerLength <= l3.count else { identity = [0] + Array(frame); return }
            proto = ip.protocol
            addresses = Array(l3[12..<20])
            // The fragment offset and MF bit, not DF (a tunnel may set or clear it).
            invariant = [4, proto] + bytes16(ip.identification) + bytes16(ip.flagsAndOffset & 0x3FFF)
            name([("dscp", "\(ip.tos >> 2)"), ("ecn", "\(ip.tos & 3)"), ("ip length", "\(ip.totalLength)"),
                       ("df", ip.dontFragment ? "1" : "0"), ("ttl", "\(ip.ttl)"), ("ip checksum", hex16(ip.checksum)),
                       ("source address", "\(ip.source)"), ("destination address", "\(ip.destination)")])
            if ip.headerLength > 20 { name([("ip options", hexBytes(l3[20..<ip.headerLength]))]) }
            l4Offset = l3Offset + ip.headerLength
            l4End = min(frame.count, l3Offset + max(ip.totalLength, ip.headerLength))
            if ip.isFragment && ip.flagsAndOffset & 0x1FFF != 0 { proto = 0 }  // no L4 header in a later fragment
        case EtherType.ipv6:
            guard let ip = IPv6View(l3), let upper = IPv6.upperLayer(of: l3) else { identity = [0] + Array(frame); return }
            proto = upper.isFragment ? 0 : upper.protocol
            addresses = Array(l3[8..<40])
            invariant = [6, upper.protocol]
            if upper.offset > 40 { invariant += Array(l3[40..<upper.offset]) }  // extension headers, fragment ID
            name([("dscp", "\(ip.trafficClass >> 2)"), ("ecn", "\(ip.trafficClass & 3)"),
                       ("flow label", "\(ip.flowLabel)"), ("payload length", "\(ip.payloadLength)"),
                       ("hop limit", "\(ip.hopLimit)"),
                  ("source address", "\(ip.source)"), ("destination address", "\(ip.destination)")])
            l4Offset = l3Offset + upper.offset
            l4End = min(frame.count, l3Offset + 40 + ip.payloadLength)
        default:
            // Not IP (or not readable as such): every byte is identity.
            identity = [0] + Array(frame)
            return
        }
        let l4 = UnsafeRawBufferPointer(rebasing: frame[min(l4Offset, l4End)..<l4End])
        var headerLength = 0
        switch proto {
        case IPProtocol.tcp where l4.count >= 20:
            headerLength = min(max(Int(l4[12] >> 4) * 4, 20), l4.count)
            ports = Array(l4[0..<4])
            l4Invariant = Array(l4[4..<12]) + [l4[13]]
            name([("source port", "\(l4.u16(0))"), ("destination port", "\(l4.u16(2))"),
                       ("tcp seq", "\(l4.u32(4))"), ("tcp ack", "\(l4.u32(8))"), ("tcp flags", hex16(UInt16(l4[13]))),
                       ("tcp window", "\(l4.u16(14))"), ("tcp checksum", hex16(l4.u16(16))),
                       ("tcp options", headerLength > 20 ? hexBytes(l4[20..<headerLength]) : "none")])
        case IPProtocol.udp where l4.count >= 8:
            headerLength = 8
            ports = Array(l4[0..<4])
            l4Invariant = Array(l4[4..<6])
            name([("source port", "\(l4.u16(0))"), ("destination port", "\(l4.u16(2))"),
                  ("udp length", "\(l4.u16(4))"), ("udp checksum", hex16(l4.u16(6)))])
        case IPProtocol.icmp where l4.count >= 8, IPProtocol.icmpv6 where l4.count >= 8:
            headerLength = 8
            l4Invariant = Array(l4[0..<2]) + Array(l4[4..<8])
            name([("icmp type", "\(l4[0])"), ("icmp code", "\(l4[1])"), ("icmp checksum", hex16(l4.u16(2))),
                  ("icmp id and sequence", hex16(l4.u16(4)) + " " + hex16(l4.u16(6)))])
        default:
            break
        }
        payload = (min(l4Offset, l4End) + headerLength)..<l4End
        let payloadBytes = UnsafeRawBufferPointer(rebasing: frame[payload])
        // The payload's length as the IP header gives it (a shorter snap length cuts what was
        // captured, not the packet).
        let declaredPayload = max(0, (l4End - l4Offset) - headerLength)
        let lengthAndDigest = bytes32(UInt32(truncatingIfNeeded: declaredPayload)) + bytes64(fnv1a(payloadBytes))
        identity = invariant + addresses + [proto] + ports + l4Invariant + lengthAndDigest
        headerKey = invariant + addresses + [proto] + ports + l4Invariant + bytes32(UInt32(truncatingIfNeeded: declaredPayload))
        contentKey = invariant + [proto] + l4Invariant + lengthAndDigest
    }
}

/// FNV-1a, 64 bits: a digest to tell payloads apart, not a defence against anyone.
func fnv1a(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}

private func bytes16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
private func bytes32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }
private func bytes64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) } }
private func hex16(_ v: UInt16) -> String { "0x" + String(v, radix: 16) }
private func hexBytes(_ b: some Collection<UInt8>) -> String { b.map { hex($0) }.joined() }
