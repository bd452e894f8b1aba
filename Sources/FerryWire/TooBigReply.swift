/// The ICMP error that answers a frame too big for the tunnel, so that path MTU discovery
/// shrinks the flow: IPv4 with DF gets "fragmentation needed" (RFC 1191), IPv6 "packet too big"
/// (RFC 8201). As Linux does for bridged tunnels, the error appears to come from the destination
/// the sender was trying to reach, and goes back to the sender's MAC.
public enum TooBigReply {
    /// Writes the Ethernet frame answering `frame` into `out` (which needs 1294 bytes at most:
    /// IPv6's error), advertising `innerMTU` as the largest inner IP packet that fits; returns
    /// its length, or nil when no error may be sent about this frame: one to or from a group,
    /// an IPv4 packet without DF, a non-first fragment, an ICMP error (only echoes may be
    /// answered), a source no error may go to (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e); Linux's
    /// `iptunnel_pmtud_check_icmp`), or a VLAN-tagged frame.
    public static func write(answering frame: UnsafeRawBufferPointer, innerMTU: Int,
                             to out: UnsafeMutableRawBufferPointer) -> Int? {
        guard let eth = EthernetView(frame), eth.vlanID == nil, !eth.destination.isMulticast,
              !eth.source.isMulticast else { return nil }
        let original = UnsafeRawBufferPointer(rebasing: frame[eth.payloadOffset...])
        switch eth.etherType {
        case EtherType.ipv4:
            guard let ip = IPv4View(original), ip.version == 4, ip.dontFragment, mayReceiveICMP(ip.source),
                  !ip.destination.isMulticast, ip.destination.value != 0xFFFF_FFFF,
                  ip.flagsAndOffset & IPv4.fragmentOffsetMask == 0,
                  ip.protocol != IPProtocol.icmp || original.count < ip.headerLength + 1
                      || original[ip.headerLength] == ICMPv4.echoRequest || original[ip.headerLength] == ICMPv4.echoReply
            else { return nil }
            Ethernet.writeHeader(to: out, at: 0, destination: eth.source, source: eth.destination, etherType: EtherType.ipv4)
            let icmpLength = ICMPv4.writeFragmentationNeeded(to: out, at: 34, nextHopMTU: innerMTU, original: original)
            IPv4.writeHeader(to: out, at: 14, totalLength: 20 + icmpLength, ttl: 64, protocol: IPProtocol.icmp,
                             source: ip.destination, destination: ip.source)
            return 34 + icmpLength
        case EtherType.ipv6:
            guard let ip = IPv6View(original), ip.version == 6, !ip.destination.isMulticast, !ip.source.isMulticast,
                  ip.source != IPv6Address(high: 0, low: 0), ip.source != IPv6Address(high: 0, low: 1),
                  let upper = IPv6.upperLayer(of: original),
                  upper.protocol != IPProtocol.icmpv6 || original.count <= upper.offset || original[upper.offset] >= 128
            else { return nil }
            Ethernet.writeHeader(to: out, at: 0, destination: eth.source, source: eth.destination, etherType: EtherType.ipv6)
            let icmpLength = ICMPv6.writePacketTooBig(to: out, at: 54, mtu: max(innerMTU, ICMPv6.minimumMTU), original: original,
                                                     source: ip.destination, destination: ip.source)
            IPv6.writeHeader(to: out, at: 14, payloadLength: icmpLength, nextHeader: IPProtocol.icmpv6, hopLimit: 64,
                             source: ip.destination, destination: ip.source)
            return 54 + icmpLength
        default:
            return nil
        }
    }

    /// Room `write` needs: an Ethernet header, an IPv6 header and a 1240-byte ICMPv6 error.
    public static var maximumLength: Int { Ethernet.headerLength + ICMPv6.minimumMTU }

    /// A unicast source that is neither unspecified, loopback, nor broadcast.
    static func mayReceiveICMP(_ a: IPv4Address) -> Bool {
        let first = a.value >> 24
        return first != 0 && first != 127 && !a.isMulticast && a.value != 0xFFFF_FFFF
    }
}
