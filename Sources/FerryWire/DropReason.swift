// The catalogue of reasons a packet is refused. Every dropped packet is counted under exactly
// one of these (as VPP's vxlan_error.def); the order below is the order of the checks, cheapest
// first, outermost layer first.

public enum DropReason: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    // Outer Ethernet
    case truncatedEthernet
    case notIPUnderlay
    // Outer IP
    case truncatedIP
    case badIPVersion
    case badIPv4HeaderLength
    case badIPv4TotalLength
    case badIPv4HeaderChecksum
    case badIPv6PayloadLength
    case truncatedIPv6ExtensionHeaders
    case outerFragment
    case notTunnelProtocol
    // Outer UDP
    case truncatedUDP
    case badUDPLength
    case notTunnelPort
    case badUDPChecksum
    // VXLAN
    case truncatedVXLAN
    case vxlanMissingIFlag
    case vxlanReservedBitsSet
    case unexpectedVNI
    // GRE
    case truncatedGRE
    case greBadVersion
    case greRoutingBitSet
    case greReservedFlagsSet
    case greUnsupportedProtocol
    case badGREChecksum
    case unexpectedGREKey
    // Inner frame
    case innerFrameTooShort
    // Forwarding (the live data plane, after decapsulation or before encapsulation)
    case receiveTruncated
    case unknownPeer
    case peerNotAccepted
    case innerSourceMACInvalid
    case innerSourceMACLocal
    case tapQueueFull
    case runtFrame
    case oversizeFrame
    case noPeer
    case sendFailed
    case sendBufferFull
    case badSuperFrame
    case badSuperFrameExtensionHeaders
    case congestionOnNotECT
    case tapWriteFailed

    /// Where in the data plane the reason arises.
    public enum Stage: String, Sendable {
        /// A packet that is not well-formed tunnel traffic of this tunnel (the decapsulator).
        case decapsulation
        /// A frame or packet refused by the data plane: policy, MTU, queues, the kernel.
        case forwarding
    }

    public var stage: Stage { rawValue >= DropReason.receiveTruncated.rawValue ? .forwarding : .decapsulation }

    /// A stable snake_case name for counters, logs and JSON.
    public var name: String {
        switch self {
        case .truncatedEthernet: "truncated_ethernet"
        case .notIPUnderlay: "not_ip_underlay"
        case .truncatedIP: "truncated_ip"
        case .badIPVersion: "bad_ip_version"
        case .badIPv4HeaderLength: "bad_ipv4_header_length"
        case .badIPv4TotalLength: "bad_ipv4_total_length"
        case .badIPv4HeaderChecksum: "bad_ipv4_header_checksum"
        case .badIPv6PayloadLength: "bad_ipv6_payload_length"
        case .truncatedIPv6ExtensionHeaders: "truncated_ipv6_extension_headers"
        case .outerFragment: "outer_fragment"
        case .notTunnelProtocol: "not_tunnel_protocol"
        case .truncatedUDP: "truncated_udp"
        case .badUDPLength: "bad_udp_length"
        case .notTunnelPort: "not_tunnel_port"
        case .badUDPChecksum: "bad_udp_checksum"
        case .truncatedVXLAN: "truncated_vxlan"
        case .vxlanMissingIFlag: "vxlan_missing_i_flag"
        case .vxlanReservedBitsSet: "vxlan_reserved_bits_set"
        case .unexpectedVNI: "unexpected_vni"
        case .truncatedGRE: "truncated_gre"
        case .greBadVersion: "gre_bad_version"
        case .greRoutingBitSet: "gre_routing_bit_set"
        case .greReservedFlagsSet: "gre_reserved_flags_set"
        case .greUnsupportedProtocol: "gre_unsupported_protocol"
        case .badGREChecksum: "bad_gre_checksum"
        case .unexpectedGREKey: "unexpected_gre_key"
        case .innerFrameTooShort: "inner_frame_too_short"
        case .receiveTruncated: "receive_truncated"
        case .unknownPeer: "unknown_peer"
        case .peerNotAccepted: "peer_not_accepted"
        case .innerSourceMACInvalid: "inner_source_mac_invalid"
        case .innerSourceMACLocal: "inner_source_mac_local"
        case .tapQueueFull: "tap_queue_full"
        case .runtFrame: "runt_frame"
        case .oversizeFrame: "oversize_frame"
        case .noPeer: "no_peer"
        case .sendFailed: "send_failed"
        case .sendBufferFull: "send_buffer_full"
        case .badSuperFrame: "bad_super_frame"
        case .badSuperFrameExtensionHeaders: "bad_super_frame_extension_headers"
        case .congestionOnNotECT: "ecn_ce_on_not_ect"
        case .tapWriteFailed: "tap_write_failed"
        }
    }

    /// One line for a person reading a summary.
    public var summary: String {
        switch self {
        case .truncatedEthernet: "frame shorter than an Ethernet header (and its VLAN tags)"
        case .notIPUnderlay: "outer EtherType is neither IPv4 nor IPv6"
        case .truncatedIP: "outer IP header or datagram cut short"
        case .badIPVersion: "outer IP version field does not match the EtherType"
        case .badIPv4HeaderLength: "outer IPv4 header length below 20 bytes"
        case .badIPv4TotalLength: "outer IPv4 total length smaller than its header"
        case .badIPv4HeaderChecksum: "outer IPv4 header checksum does not verify"
        case .badIPv6PayloadLength: "outer IPv6 payload length is zero (jumbogram) or inconsistent"
        case .truncatedIPv6ExtensionHeaders: "outer IPv6 extension headers run past the packet"
        case .outerFragment: "outer IP fragment (Ferry does not reassemble the underlay)"
        case .notTunnelProtocol: "outer IP protocol is neither UDP nor GRE"
        case .truncatedUDP: "outer UDP header cut short"
        case .badUDPLength: "outer UDP length field disagrees with the IP length"
        case .notTunnelPort: "outer UDP destination port is not the VXLAN port"
        case .badUDPChecksum: "outer UDP checksum does not verify"
        case .truncatedVXLAN: "VXLAN header cut short"
        case .vxlanMissingIFlag: "VXLAN flags without the I (valid VNI) bit"
        case .vxlanReservedBitsSet: "VXLAN reserved flag or field bits set"
        case .unexpectedVNI: "VXLAN VNI is not the one configured"
        case .truncatedGRE: "GRE header (with the fields its flags announce) cut short"
        case .greBadVersion: "GRE version is not 0"
        case .greRoutingBitSet: "GRE routing bit set (RFC 1701 source routing)"
        case .greReservedFlagsSet: "GRE reserved flag bits 4-5 set"
        case .greUnsupportedProtocol: "GRE protocol type is not 0x6558 (transparent Ethernet bridging)"
        case .badGREChecksum: "GRE checksum does not verify"
        case .unexpectedGREKey: "GRE key missing or not the one configured"
        case .innerFrameTooShort: "inner frame shorter than an Ethernet header"
        case .receiveTruncated: "datagram larger than the receive buffer"
        case .unknownPeer: "sent by an address that is not a peer of this tunnel"
        case .peerNotAccepted: "sent by an address outside every --accept-cidr prefix: it may not become a peer"
        case .innerSourceMACInvalid: "inner source MAC is multicast, zero, or this tunnel's own"
        case .innerSourceMACLocal: "accept-any mode: inner source MAC is a local bridge port's, which no peer may claim"
        case .tapQueueFull: "TAP queue full: nothing is reading on the bridge side"
        case .runtFrame: "frame from the TAP shorter than an Ethernet header"
        case .oversizeFrame: "frame too big for the tunnel (underlay MTU less encapsulation), or a decapsulated one too big for the TAP's MTU"
        case .noPeer: "no peer to send to: none configured or learned yet"
        case .sendFailed: "the kernel refused to send (no route to the peer, …)"
        case .sendBufferFull: "socket send buffer stayed full"
        case .badSuperFrame: "TAP super-frame that is not TCP or UDP, or whose headers do not add up"
        case .badSuperFrameExtensionHeaders: "TAP IPv6 super-frame whose extension headers run past the transport header, exceed 8 headers or 512 bytes, or include a fragment, AH, ESP or an unfollowable routing header"
        case .congestionOnNotECT: "outer header marked congestion (CE) over an inner packet that cannot carry it (RFC 6040)"
        case .tapWriteFailed: "the kernel refused a frame written to the TAP"
        }
    }

    public var description: String { name }
}
