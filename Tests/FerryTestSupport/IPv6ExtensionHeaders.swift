import FerryWire

/// IPv6 extension headers spliced into a built frame, for tests of what walks them.
public enum IPv6ExtensionHeaders {
    /// An options header (hop-by-hop or destination options) of `8 × (units + 1)` bytes: an
    /// experimental option (type 0x1E, RFC 4727: skip if unknown) holding `data`, then a PadN
    /// option to fill it. The next-header byte is left 0 for `splice` to set.
    public static func options(units: Int, data: [UInt8] = [0xA1, 0xB2]) -> [UInt8] {
        let length = 8 * (units + 1)
        precondition(2 + 2 + data.count + 2 <= length, "room for the option and a PadN")
        var h: [UInt8] = [0, UInt8(units), 0x1E, UInt8(data.count)] + data
        // PadN options (at most 257 bytes each), a Pad1 for a last odd byte.
        while h.count < length {
            let rest = length - h.count
            if rest == 1 { h.append(0); break }
            let n = min(rest, 257)
            h += [1, UInt8(n - 2)] + [UInt8](repeating: 0, count: n - 2)
        }
        return h
    }

    /// A Segment Routing Header (RFC 8754, routing type 4) over `segments`, given in path order
    /// (the header stores them in reverse: Segment List[0] is the last).
    public static func segmentRouting(_ segments: [IPv6Address], segmentsLeft: UInt8, type: UInt8 = 4) -> [UInt8] {
        var h: [UInt8] = [0, UInt8(2 * segments.count), type, segmentsLeft, UInt8(segments.count - 1), 0, 0, 0]
        for s in segments.reversed() {
            var a = [UInt8](repeating: 0, count: 16)
            a.withUnsafeMutableBytes { s.write(to: $0, at: 0) }
            h += a
        }
        return h
    }

    /// `frame` (Ethernet, untagged IPv6) with `chain` — each a protocol number and the header's
    /// bytes — inserted after the fixed header, in order, with the next-header fields and the
    /// payload length set. The transport checksum is left as it was: the pseudo-header takes the
    /// upper-layer length, not the payload length.
    public static func splice(_ frame: [UInt8], _ chain: [(UInt8, [UInt8])]) -> [UInt8] {
        let l3 = Ethernet.headerLength
        var f = frame
        let upper = f[l3 + 6]
        var bytes: [UInt8] = []
        for (i, (_, header)) in chain.enumerated() {
            var h = header
            h[0] = i + 1 < chain.count ? chain[i + 1].0 : upper
            bytes += h
        }
        if let first = chain.first { f[l3 + 6] = first.0 }
        let payloadLength = (Int(f[l3 + 4]) << 8 | Int(f[l3 + 5])) + bytes.count
        f[l3 + 4] = UInt8(payloadLength >> 8); f[l3 + 5] = UInt8(payloadLength & 0xFF)
        f.insert(contentsOf: bytes, at: l3 + IPv6.headerLength)
        return f
    }
}
