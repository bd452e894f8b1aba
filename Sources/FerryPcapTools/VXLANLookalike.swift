import FerryWire

/// The UDP destination port of `frame` when its datagram reads as VXLAN though the tools were
/// not looking for VXLAN on that port: the I flag alone set, the reserved fields zero, and an
/// inner Ethernet frame whose EtherType is IPv4, IPv6, ARP or 802.1Q. That is the mark of a
/// capture taken on a tunnel with a port of its own (`--dstport` reads it); nil otherwise.
public func vxlanLookalikePort(of frame: UnsafeRawBufferPointer) -> UInt16? {
    guard let eth = EthernetView(frame) else { return nil }
    let ip = eth.payload
    let l4: Int
    switch eth.etherType {
    case EtherType.ipv4:
        guard let v4 = IPv4View(ip), v4.protocol == IPProtocol.udp, !v4.isFragment, v4.headerLength >= 20 else { return nil }
        l4 = v4.headerLength
    case EtherType.ipv6:
        guard let upper = IPv6.upperLayer(of: ip), upper.protocol == IPProtocol.udp, !upper.isFragment else { return nil }
        l4 = upper.offset
    default:
        return nil
    }
    guard l4 + UDP.headerLength <= ip.count else { return nil }
    let port = ip.u16(l4 + 2)
    let policy = DecapsulationPolicy(acceptGRE: false, vxlanPort: port, udpChecksum: .ignore)
    guard case .packet(let p) = Decapsulator(policy: policy).decapsulate(frame: frame), p.inner.count >= Ethernet.headerLength
    else { return nil }
    let innerType = frame.u16(p.inner.lowerBound + 12)
    return [EtherType.ipv4, EtherType.ipv6, EtherType.arp, EtherType.vlan].contains(innerType) ? port : nil
}
