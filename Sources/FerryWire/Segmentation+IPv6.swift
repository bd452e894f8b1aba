// IPv6 extension headers in a super-frame: the chain between the fixed header and TCP/UDP is
// walked (bounded), checked to end where the virtio header's csum_start says the transport
// header begins, and copied whole into every segment, as the kernel's ipv6_gso_segment does
// with the headers it marks INET6_PROTO_GSO_EXTHDR (hop-by-hop, routing, destination options).

extension Segmentation {
    /// Most extension headers walked in a super-frame (IPv6.upperLayer's bound too).
    public static let maximumExtensionHeaders = 8
    /// Most bytes of extension headers in a super-frame: each segment carries a copy.
    public static let maximumExtensionBytes = 512
    /// Routing type 4, the Segment Routing Header (RFC 8754).
    public static let segmentRoutingHeaderType: UInt8 = 4

    /// Walks the extension headers of the IPv6 packet at `l3` in `frame` up to the transport
    /// header at `l4` (the virtio header's csum_start), whose protocol must be `proto`.
    /// Returns the offset of the address the transport checksum's pseudo-header takes as its
    /// destination (RFC 8200 §8.1: the final destination): the IPv6 destination, unless a
    /// routing header still has segments left; then, for a Segment Routing Header, Segment
    /// List[0], the last segment of the path (the list is stored in reverse, RFC 8754 §2).
    /// Any other routing type with segments left (type 0 is deprecated by RFC 5095; type 2 and
    /// 3 never come from a container's stack through a TAP) is refused rather than guessed.
    ///
    /// Throws `badExtensionHeaders` when a header runs past `l4` or the chain does not end at
    /// `l4`, `tooManyExtensionHeaders` past `maximumExtensionHeaders` headers or
    /// `maximumExtensionBytes` bytes, `unsupportedExtensionHeader` for a fragment, AH or ESP
    /// header (none can be cut into segments), a second routing header, or a routing header
    /// whose final destination is not known, and `wrongProtocol` when the chain ends in
    /// another protocol.
    @inlinable
    static func finalDestinationOffset(_ frame: UnsafeRawBufferPointer, l3: Int, l4: Int, proto: UInt8) throws(Failure) -> Int {
        guard l4 >= l3 + IPv6.headerLength else { throw .badExtensionHeaders }
        var next = frame[l3 + 6]
        var at = l3 + IPv6.headerLength
        var destinationAt = l3 + 24
        var headers = 0, routed = false
        while next != proto {
            switch next {
            case IPProtocol.ipv6HopByHop, IPProtocol.ipv6Route, IPProtocol.ipv6DestinationOptions:
                headers += 1
                guard headers <= maximumExtensionHeaders else { throw .tooManyExtensionHeaders }
                // The two bytes every one of these starts with: next header, length in 8-byte
                // units not counting the first eight.
                guard at + 8 <= l4 else { throw .badExtensionHeaders }
                let length = (Int(frame[at + 1]) + 1) * 8
                guard at + length <= l4 else { throw .badExtensionHeaders }
                guard at + length - l3 - IPv6.headerLength <= maximumExtensionBytes else { throw .tooManyExtensionHeaders }
                if next == IPProtocol.ipv6Route {
                    // RFC 8200 §4.1: a routing header occurs at most once.
                    guard !routed else { throw .unsupportedExtensionHeader }
                    routed = true
                    if frame[at + 3] > 0 {  // segments left
                        // Type, segments left, last entry, flags, tag, then Segment List[0].
                        guard frame[at + 2] == segmentRoutingHeaderType, length >= 8 + 16 else { throw .unsupportedExtensionHeader }
                        destinationAt = at + 8
                    }
                }
                next = frame[at]
                at += length
            case IPProtocol.ipv6Fragment, IPProtocol.ah, IPProtocol.esp:
                throw .unsupportedExtensionHeader
            default:
                throw .wrongProtocol
            }
        }
        guard at == l4 else { throw .badExtensionHeaders }
        return destinationAt
    }
}
