// A hash of an inner frame's flow, for the outer UDP source port: the underlay's ECMP and RSS
// then spread flows while keeping each flow on one path (Linux `udp_flow_src_port`, OVS).

public enum FlowHash {
    /// Hashes IP addresses, protocol and, for unfragmented TCP/UDP/SCTP, the ports; for other
    /// frames the MAC addresses and EtherType. Never reads past `frame`.
    @inlinable
    public static func hash(ofFrame frame: UnsafeRawBufferPointer) -> UInt32 {
        guard let eth = EthernetView(frame) else { return 0 }
        let l3 = eth.payloadOffset
        var h: UInt64
        var l4Offset = -1
        var proto: UInt8 = 0
        switch eth.etherType {
        case EtherType.ipv4 where frame.count >= l3 + IPv4.minimumHeaderLength:
            proto = frame[l3 + 9]
            h = UInt64(frame.u32(l3 + 12)) << 32 | UInt64(frame.u32(l3 + 16))
            h = mix(h ^ UInt64(proto))
            let ihl = Int(frame[l3] & 0x0F) * 4
            if frame.u16(l3 + 6) & (IPv4.flagMoreFragments | IPv4.fragmentOffsetMask) == 0, ihl >= 20 {
                l4Offset = l3 + ihl
            }
        case EtherType.ipv6 where frame.count >= l3 + IPv6.headerLength:
            h = mix(frame.u64(l3 + 8) ^ mix(frame.u64(l3 + 16)))
            h = mix(h ^ frame.u64(l3 + 24) ^ mix(frame.u64(l3 + 32)))
            proto = frame[l3 + 6]
            h = mix(h ^ UInt64(proto))
            if proto == IPProtocol.tcp || proto == IPProtocol.udp { l4Offset = l3 + IPv6.headerLength }
        default:
            h = mix(eth.destination.value ^ mix(eth.source.value ^ UInt64(eth.etherType) << 48))
        }
        if l4Offset >= 0, proto == IPProtocol.tcp || proto == IPProtocol.udp || proto == 132,
           frame.count >= l4Offset + 4 {
            h = mix(h ^ UInt64(frame.u32(l4Offset)))
        }
        return UInt32(truncatingIfNeeded: h ^ h >> 32)
    }

    /// Maps a hash into `range` without a division (Linux's `reciprocal_scale`).
    @inlinable @inline(__always)
    public static func port(for hash: UInt32, in range: ClosedRange<UInt16>) -> UInt16 {
        let span = UInt64(range.upperBound - range.lowerBound) + 1
        return range.lowerBound &+ UInt16(truncatingIfNeeded: (UInt64(hash) &* span) >> 32)
    }

    /// The 64-bit finaliser of MurmurHash3: cheap, and every input bit reaches every output bit.
    @inlinable @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var k = x
        k ^= k >> 33
        k &*= 0xFF51_AFD7_ED55_8CCD
        k ^= k >> 33
        k &*= 0xC4CE_B9FE_1A85_EC53
        k ^= k >> 33
        return k
    }
}
