// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//
// Sums are carried as 16-bit one's-complement values in network order ("partial sums", not yet
// complemented) so that pieces computed separately — a pseudo-header precomputed in a template,
// the header, the payload — combine with `add`. Each piece must start at an even offset of the
// checksummed region, which holds for every header Ferry builds.

public enum InternetChecksum {
    /// One's-complement sum of `bytes` as big-endian 16-bit words (a trailing odd byte is padded
    /// with zero), folded to 16 bits and not complemented.
    @inlinable
    public static func sum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        guard let base = bytes.baseAddress else { return 0 }
        let n = bytes.count
        // Native-order words: one's-complement addition commutes with byte swapping (RFC 1071
        // §2(B)), so sum in the machine's order and swap the folded result once.
        //
        // Each 64-bit word is added as its two 32-bit halves, into two accumulators, with plain
        // wrapping adds: no carry chain ties one step to the next, so LLVM vectorizes the loop
        // (SSE2: pand, psrlq, paddq). Neither accumulator can overflow: every addend is below 2^32,
        // so reaching 2^64 would take more than 2^32 additions, a buffer over 32 GiB. Carries out
        // of bit 31 stay in the upper half of the accumulator and are folded in at the end.
        var low: UInt64 = 0, high: UInt64 = 0
        let words = n / 8
        var p = base
        for _ in 0..<words {
            let w = p.loadUnaligned(as: UInt64.self)
            low &+= w & 0xFFFF_FFFF
            high &+= w >> 32
            p += 8
        }
        var acc = addCarry(low, high)
        var i = words * 8
        if i + 4 <= n {
            acc = addCarry(acc, UInt64(base.loadUnaligned(fromByteOffset: i, as: UInt32.self)))
            i += 4
        }
        if i + 2 <= n {
            acc = addCarry(acc, UInt64(base.loadUnaligned(fromByteOffset: i, as: UInt16.self)))
            i += 2
        }
        if i < n {
            acc = addCarry(acc, UInt64(UInt16(bigEndian: UInt16(base.load(fromByteOffset: i, as: UInt8.self)) << 8)))
        }
        return UInt16(bigEndian: fold64(acc))
    }

    /// One's-complement addition of two partial sums.
    @inlinable @inline(__always)
    public static func add(_ a: UInt16, _ b: UInt16) -> UInt16 {
        let s = UInt32(a) &+ UInt32(b)
        return UInt16(truncatingIfNeeded: (s & 0xFFFF) &+ (s >> 16))
    }

    /// Adds a 32-bit quantity (two 16-bit words) to a partial sum.
    @inlinable @inline(__always)
    public static func add(_ a: UInt16, _ b: UInt32) -> UInt16 {
        add(add(a, UInt16(truncatingIfNeeded: b >> 16)), UInt16(truncatingIfNeeded: b))
    }

    /// The checksum to store: the complement of the sum of `bytes`.
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt16 { ~sum(bytes) }

    /// True when `bytes`, including their stored checksum field, sum to 0xFFFF.
    @inlinable
    public static func isValid(_ bytes: UnsafeRawBufferPointer, initial: UInt16 = 0) -> Bool {
        add(initial, sum(bytes)) == 0xFFFF
    }

    /// RFC 1624 eqn. 3: the checksum `old` after a 16-bit word of the covered data changes
    /// from `from` to `to`: HC' = ~(~HC + ~m + m').
    @inlinable @inline(__always)
    public static func update(_ old: UInt16, from: UInt16, to: UInt16) -> UInt16 {
        ~add(add(~old, ~from), to)
    }

    /// RFC 1624 for a 32-bit field (an address, a sequence number).
    @inlinable @inline(__always)
    public static func update(_ old: UInt16, from: UInt32, to: UInt32) -> UInt16 {
        let hi = update(old, from: UInt16(truncatingIfNeeded: from >> 16), to: UInt16(truncatingIfNeeded: to >> 16))
        return update(hi, from: UInt16(truncatingIfNeeded: from), to: UInt16(truncatingIfNeeded: to))
    }

    /// Partial sum of the IPv4 pseudo-header (RFC 768, RFC 793) for an L4 segment of `length`.
    @inlinable
    public static func pseudoHeaderSum(source: IPv4Address, destination: IPv4Address,
                                       protocol proto: UInt8, length: Int) -> UInt16 {
        // Plain 64-bit adds of the 32-bit quantities, folded once (as `sum` does): no carry is
        // lost, and no step waits on the previous one's fold.
        fold64(UInt64(source.value) &+ UInt64(destination.value) &+ UInt64(proto)
            &+ UInt64(UInt16(truncatingIfNeeded: length)))
    }

    /// Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1).
    @inlinable
    public static func pseudoHeaderSum(source: IPv6Address, destination: IPv6Address,
                                       protocol proto: UInt8, length: Int) -> UInt16 {
        // Ten addends below 2^32: the 64-bit accumulator cannot overflow.
        let halves: (UInt64) -> UInt64 = { ($0 >> 32) &+ ($0 & 0xFFFF_FFFF) }
        return fold64(halves(source.high) &+ halves(source.low) &+ halves(destination.high) &+ halves(destination.low)
            &+ UInt64(UInt32(truncatingIfNeeded: length)) &+ UInt64(proto))
    }

    /// Pseudo-header sum for either family (the addresses must be of the same family).
    @inlinable
    public static func pseudoHeaderSum(source: IPAddress, destination: IPAddress,
                                       protocol proto: UInt8, length: Int) -> UInt16 {
        switch (source, destination) {
        case (.v4(let s), .v4(let d)): pseudoHeaderSum(source: s, destination: d, protocol: proto, length: length)
        case (.v6(let s), .v6(let d)): pseudoHeaderSum(source: s, destination: d, protocol: proto, length: length)
        default: preconditionFailure("pseudo-header over mixed address families")
        }
    }

    @inlinable @inline(__always)
    static func addCarry(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (s, overflow) = a.addingReportingOverflow(b)
        return s &+ (overflow ? 1 : 0)
    }

    @inlinable @inline(__always)
    static func fold64(_ acc: UInt64) -> UInt16 {
        var s = (acc & 0xFFFF_FFFF) &+ (acc >> 32)
        s = (s & 0xFFFF_FFFF) &+ (s >> 32)
        var t = UInt32(truncatingIfNeeded: s)
        t = (t & 0xFFFF) &+ (t >> 16)
        t = (t & 0xFFFF) &+ (t >> 16)
        return UInt16(truncatingIfNeeded: t)
    }
}
