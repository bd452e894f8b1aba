// Link and network addresses as plain values: no heap, no Foundation, parsed and printed here
// so that FerryWire stays free of Glibc (no inet_pton).

/// A 48-bit Ethernet address, stored in the low 48 bits of a `UInt64` (first octet highest).
public struct MACAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var value: UInt64

    @inlinable public init(value: UInt64) { self.value = value & 0xFFFF_FFFF_FFFF }

    public init(_ o0: UInt8, _ o1: UInt8, _ o2: UInt8, _ o3: UInt8, _ o4: UInt8, _ o5: UInt8) {
        self.init(value: UInt64(o0) << 40 | UInt64(o1) << 32 | UInt64(o2) << 24
            | UInt64(o3) << 16 | UInt64(o4) << 8 | UInt64(o5))
    }

    /// Reads six octets at `offset`.
    @inlinable public init(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        self.init(value: UInt64(bytes.u16(offset)) << 32 | UInt64(bytes.u32(offset + 2)))
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
    public init?(_ text: String) {
        let parts = text.split(omittingEmptySubsequences: false) { $0 == ":" || $0 == "-" }
        guard parts.count == 6 else { return nil }
        var v: UInt64 = 0
        for part in parts {
            guard (1...2).contains(part.count), part.allSatisfy(\.isHexDigit), let octet = UInt8(part, radix: 16)
            else { return nil }
            v = v << 8 | UInt64(octet)
        }
        self.init(value: v)
    }

    @inlinable public func write(to bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes.setU16(UInt16(truncatingIfNeeded: value >> 32), at: offset)
        bytes.setU32(UInt32(truncatingIfNeeded: value), at: offset + 2)
    }

    public static let broadcast = MACAddress(value: 0xFFFF_FFFF_FFFF)
    public static let zero = MACAddress(value: 0)

    /// Group bit (I/G) of the first octet: broadcast and multicast frames are flooded.
    @inlinable public var isMulticast: Bool { value & 0x0100_0000_0000 != 0 }
    @inlinable public var isBroadcast: Bool { value == 0xFFFF_FFFF_FFFF }

    public var octets: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: value >> UInt64(40 - 8 * $0)) } }

    public var description: String {
        octets.map { hex2($0) }.joined(separator: ":")
    }

    public static func < (a: MACAddress, b: MACAddress) -> Bool { a.value < b.value }
}

/// An IPv4 address in host order (`10.0.0.1` is `0x0A00_0001`).
public struct IPv4Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var value: UInt32
    @inlinable public init(value: UInt32) { self.value = value }
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }
    @inlinable public init(_ bytes: UnsafeRawBufferPointer, at offset: Int) { value = bytes.u32(offset) }

    /// Parses dotted-quad notation, four decimal octets, no leading `+` or spaces.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy(\.isASCIIDigit),
                  let octet = UInt8(part) else { return nil }
            v = v << 8 | UInt32(octet)
        }
        value = v
    }

    @inlinable public func write(to bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes.setU32(value, at: offset)
    }

    public var isMulticast: Bool { value >> 28 == 0xE }
    public var isUnspecified: Bool { value == 0 }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
    }
    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }
}

/// An IPv6 address as two 64-bit halves in host order.
public struct IPv6Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64
    @inlinable public init(high: UInt64, low: UInt64) { self.high = high; self.low = low }
    @inlinable public init(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        high = bytes.u64(offset)
        low = bytes.u64(offset + 8)
    }

    /// Parses RFC 4291 text: eight groups, `::` once, an embedded dotted quad at the end.
    public init?(_ text: String) {
        guard !text.isEmpty, text.count <= 45 else { return nil }
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var sawGap = false
        let pieces = text.components(separatedByDoubleColon: ())
        guard let pieces, pieces.count <= 2 else { return nil }
        func groups(_ s: Substring, allowIPv4: Bool) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            let fields = s.split(separator: ":", omittingEmptySubsequences: false)
            for (i, f) in fields.enumerated() {
                if i == fields.count - 1, allowIPv4, f.contains(".") {
                    guard let v4 = IPv4Address(String(f)) else { return nil }
                    out.append(UInt16(v4.value >> 16)); out.append(UInt16(v4.value & 0xFFFF))
                } else {
                    guard (1...4).contains(f.count), f.allSatisfy(\.isHexDigit), let g = UInt16(f, radix: 16)
                    else { return nil }
                    out.append(g)
                }
            }
            return out
        }
        if pieces.count == 2 {
            sawGap = true
            guard let h = groups(pieces[0], allowIPv4: false), let t = groups(pieces[1], allowIPv4: true)
            else { return nil }
            head = h; tail = t
            guard head.count + tail.count <= 7 else { return nil }
        } else {
            guard let h = groups(pieces[0], allowIPv4: true), h.count == 8 else { return nil }
            head = h
        }
        let all = sawGap ? head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail : head
        var hi: UInt64 = 0, lo: UInt64 = 0
        for i in 0..<4 { hi = hi << 16 | UInt64(all[i]) }
        for i in 4..<8 { lo = lo << 16 | UInt64(all[i]) }
        high = hi; low = lo
    }

    @inlinable public func write(to bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes.setU64(high, at: offset)
        bytes.setU64(low, at: offset + 8)
    }

    public var isMulticast: Bool { high >> 56 == 0xFF }

    var groups: [UInt16] {
        (0..<4).map { UInt16(truncatingIfNeeded: high >> UInt64(48 - 16 * $0)) }
            + (0..<4).map { UInt16(truncatingIfNeeded: low >> UInt64(48 - 16 * $0)) }
    }

    /// RFC 5952 canonical text: lowercase, the longest run (two or more) of zero groups as `::`.
    public var description: String {
        let g = groups
        var bestStart = -1, bestLength = 1, runStart = -1
        for i in 0...8 {
            if i < 8 && g[i] == 0 {
                if runStart < 0 { runStart = i }
            } else if runStart >= 0 {
                if i - runStart > bestLength { bestStart = runStart; bestLength = i - runStart }
                runStart = -1
            }
        }
        func hex(_ r: ArraySlice<UInt16>) -> String { r.map { String($0, radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(g[...]) }
        return hex(g[..<bestStart]) + "::" + hex(g[(bestStart + bestLength)...])
    }

    public static func < (a: IPv6Address, b: IPv6Address) -> Bool { (a.high, a.low) < (b.high, b.low) }
}

/// An underlay or inner address of either family.
public enum IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    /// Parses either family; IPv6 may be written in brackets (`[fd00::1]`).
    public init?(_ text: String) {
        if let a = IPv4Address(text) { self = .v4(a); return }
        var t = Substring(text)
        if t.first == "[" && t.last == "]" { t = t.dropFirst().dropLast() }
        if let a = IPv6Address(String(t)) { self = .v6(a); return }
        return nil
    }

    public var isIPv6: Bool { if case .v6 = self { true } else { false } }

    public var description: String {
        switch self {
        case .v4(let a): a.description
        case .v6(let a): a.description
        }
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        switch (a, b) {
        case (.v4(let x), .v4(let y)): x < y
        case (.v6(let x), .v6(let y)): x < y
        case (.v4, .v6): true
        case (.v6, .v4): false
        }
    }
}

@usableFromInline
func hex2(_ b: UInt8) -> String {
    let digits: [Character] = Array("0123456789abcdef")
    return String([digits[Int(b >> 4)], digits[Int(b & 0xF)]])
}

extension Character {
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}

extension String {
    /// Splits at the first `::` (nil when `::` appears twice: not a valid IPv6 address).
    fileprivate func components(separatedByDoubleColon _: ()) -> [Substring]? {
        var result: [Substring] = []
        var start = startIndex
        var i = startIndex
        while i < endIndex {
            let next = index(after: i)
            if self[i] == ":", next < endIndex, self[next] == ":" {
                result.append(self[start..<i])
                start = index(after: next)
                i = start
                // A ":::" is never valid.
                if i < endIndex, self[i] == ":" { return nil }
                continue
            }
            i = next
        }
        result.append(self[start...])
        return result.count <= 2 ? result : nil
    }
}
