// RFC 6040 at the decapsulating end: congestion experienced (CE) on the outer header is
// copied into the inner IP header, so that the endpoints see what the underlay saw. An inner
// packet that is not ECN-capable cannot carry the mark and is dropped, as Linux does
// (INET_ECN_decapsulate); anything that is not IP passes as it is. The inner IP header is
// found past up to two VLAN tags (Linux goes by the outer protocol and would pass a tagged
// frame unmarked). Like Linux, only CE is acted on: ECT(1) outside over ECT(0) inside is not
// copied. (The encapsulating end is EncapsulationTemplate's.)

public enum ECN {
    @inlinable public static var notECT: UInt8 { 0 }
    @inlinable public static var ect1: UInt8 { 1 }
    @inlinable public static var ect0: UInt8 { 2 }
    @inlinable public static var ce: UInt8 { 3 }

    public enum Outcome: Equatable, Sendable {
        /// Nothing to do: no CE outside, or CE already inside, or not IP inside.
        case unchanged
        /// The inner header now carries CE (and, for IPv4, a checksum to match).
        case marked
        /// CE outside, not-ECT inside: drop.
        case drop
    }

    /// Applies the outer header's ECN field `outer` to the inner Ethernet `frame`, in place.
    @inlinable
    public static func decapsulate(outer: UInt8, frame: UnsafeMutableRawBufferPointer) -> Outcome {
        let bytes = UnsafeRawBufferPointer(frame)
        guard outer & 3 == ce, let eth = EthernetView(bytes) else { return .unchanged }
        let l3 = eth.payloadOffset
        switch eth.etherType {
        case EtherType.ipv4 where frame.count >= l3 + IPv4.minimumHeaderLength && frame[l3] >> 4 == 4:
            let word = bytes.u16(l3)  // version, header length, TOS
            switch UInt8(truncatingIfNeeded: word) & 3 {
            case notECT: return .drop
            case ce: return .unchanged
            default:
                let marked = word | UInt16(ce)
                frame.setU16(marked, at: l3)
                frame.setU16(InternetChecksum.update(bytes.u16(l3 + 10), from: word, to: marked), at: l3 + 10)
                return .marked
            }
        case EtherType.ipv6 where frame.count >= l3 + IPv6.headerLength && frame[l3] >> 4 == 6:
            // Traffic class: the low nibble of byte 0 and the high nibble of byte 1; ECN is
            // its two low bits, bits 4-5 of byte 1.
            switch (frame[l3 + 1] >> 4) & 3 {
            case notECT: return .drop
            case ce: return .unchanged
            default:
                frame[l3 + 1] |= ce << 4
                return .marked
            }
        default:
            return .unchanged
        }
    }
}
