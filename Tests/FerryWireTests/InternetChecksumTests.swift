import FerryTestSupport
import Testing
@testable import FerryWire

@Suite struct InternetChecksumTests {
    @Test func rfc1071Example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        #expect(sum(hex("0001 f203 f4f5 f6f7")) == 0xDDF2)
    }

    @Test func matchesNaiveSumForEveryLengthAndAlignment() {
        var rng = SplitMix64(seed: 1)
        for length in 0..<300 {
            for shift in 0..<3 {
                let bytes = (0..<(length + shift)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let region = Array(bytes[shift...])
                // Unaligned base addresses come from slicing at an odd offset.
                let fast = bytes.withUnsafeBytes { InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: $0[shift...])) }
                #expect(fast == referenceSum(region), "length \(length) shift \(shift)")
            }
        }
        // All-ones data stresses the carries.
        let ones = [UInt8](repeating: 0xFF, count: 4096)
        #expect(sum(ones) == referenceSum(ones))
    }

    @Test func vectorizedSumMatchesByteWiseReferenceAtEveryOffset() {
        // Big-endian byte pairs with the end-around carry taken at every step.
        func byteWise(_ b: UnsafeRawBufferPointer) -> UInt16 {
            var s: UInt32 = 0
            var i = 0
            while i < b.count {
                s += UInt32(b[i]) << 8 | (i + 1 < b.count ? UInt32(b[i + 1]) : 0)
                s = (s & 0xFFFF) + (s >> 16)
                i += 2
            }
            return UInt16(s)
        }
        var rng = SplitMix64(seed: 3)
        for length in Array(0...300) + [1500, 9000, 65535] {
            let random = (0..<(length + 7)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // All ones: the most carries (worst case for the accumulators and the fold).
            let ones = [UInt8](repeating: 0xFF, count: length + 7)
            for (name, bytes) in [("random", random), ("0xFF", ones)] {
                bytes.withUnsafeBytes { all in
                    for offset in 0...7 {
                        let region = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + length)])
                        #expect(InternetChecksum.sum(region) == byteWise(region), "\(name) length \(length) offset \(offset)")
                    }
                }
            }
        }
    }

    @Test func ipv4HeaderChecksumFromAKnownHeader() {
        // The outer header of kernel-vxlan.pcap's first frame; its checksum is f1f5.
        var header = hex("4500 004e 7317 0000 4011 0000 0ac8 0001 0ac8 0002")
        header.withUnsafeMutableBytes { $0.setU16(InternetChecksum.checksum(UnsafeRawBufferPointer($0)), at: 10) }
        #expect(header[10] == 0xF1 && header[11] == 0xF5)
        #expect(header.withUnsafeBytes { InternetChecksum.isValid($0) })
    }

    @Test func incrementalUpdateEqualsRecomputation() {
        var rng = SplitMix64(seed: 2)
        for _ in 0..<2000 {
            var bytes = (0..<40).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let old = ~sum(bytes)
            let word = Int.random(in: 0..<19, using: &rng) * 2
            let from = UInt16(bytes[word]) << 8 | UInt16(bytes[word + 1])
            let to = UInt16.random(in: 0...0xFFFF, using: &rng)
            bytes[word] = UInt8(to >> 8); bytes[word + 1] = UInt8(to & 0xFF)
            let updated = InternetChecksum.update(old, from: from, to: to)
            // RFC 1624: the result may differ only in the +0/-0 representation.
            let full = ~sum(bytes)
            #expect(updated == full || (updated == 0xFFFF && full == 0) || (updated == 0 && full == 0xFFFF))

            let w32 = Int.random(in: 0..<9, using: &rng) * 4
            let from32 = UInt32(bytes[w32]) << 24 | UInt32(bytes[w32 + 1]) << 16 | UInt32(bytes[w32 + 2]) << 8 | UInt32(bytes[w32 + 3])
            let to32 = UInt32.random(in: 0...UInt32.max, using: &rng)
            for k in 0..<4 { bytes[w32 + k] = UInt8(truncatingIfNeeded: to32 >> UInt32(24 - 8 * k)) }
            let updated32 = InternetChecksum.update(full, from: from32, to: to32)
            let full32 = ~sum(bytes)
            #expect(updated32 == full32 || (updated32 | full32) == 0xFFFF && (updated32 & full32) == 0)
        }
    }

    @Test func pseudoHeaderSumsMatchTheirByteLayout() {
        let s = IPv4Address(10, 200, 0, 1), d = IPv4Address(10, 200, 0, 2)
        let layout4 = hex("0ac8 0001 0ac8 0002 0011 003a")
        #expect(InternetChecksum.pseudoHeaderSum(source: s, destination: d, protocol: 17, length: 0x3A) == referenceSum(layout4))
        let s6 = IPv6Address("fd00::1")!, d6 = IPv6Address("fd00::2:3")!
        let layout6 = hex("fd00 0000 0000 0000 0000 0000 0000 0001 fd00 0000 0000 0000 0000 0000 0002 0003 0001 0000 0000 0011")
        #expect(InternetChecksum.pseudoHeaderSum(source: s6, destination: d6, protocol: 17, length: 0x10000) == referenceSum(layout6))
    }

    @Test func pseudoHeaderSumsMatchTheirByteLayoutForRandomAndCarryHeavyFields() {
        func bytes<T: FixedWidthInteger>(_ v: T) -> [UInt8] { (0..<(T.bitWidth / 8)).reversed().map { UInt8(truncatingIfNeeded: v >> ($0 * 8)) } }
        var rng = SplitMix64(seed: 7)
        for i in 0..<2000 {
            // Every fourth case all ones but a few bits, where every addition carries.
            let (a, b, c, d) = i % 4 == 0 ? (UInt64.max, UInt64.max - UInt64(i), UInt64.max, UInt64.max)
                : (rng.next(), rng.next(), rng.next(), rng.next())
            let proto = UInt8(truncatingIfNeeded: rng.next()), length = Int(rng.next() % 0x1_0000)
            let s4 = IPv4Address(value: UInt32(truncatingIfNeeded: a)), d4 = IPv4Address(value: UInt32(truncatingIfNeeded: b))
            #expect(InternetChecksum.pseudoHeaderSum(source: s4, destination: d4, protocol: proto, length: length)
                == referenceSum(bytes(s4.value) + bytes(d4.value) + [0, proto] + bytes(UInt16(length))))
            let s6 = IPv6Address(high: a, low: b), d6 = IPv6Address(high: c, low: d)
            let jumbo = length * 3  // IPv6 carries a 32-bit length
            #expect(InternetChecksum.pseudoHeaderSum(source: s6, destination: d6, protocol: proto, length: jumbo)
                == referenceSum(bytes(a) + bytes(b) + bytes(c) + bytes(d) + bytes(UInt32(jumbo)) + [0, 0, 0, proto]))
        }
    }

    @Test func udpZeroChecksumIsSentAsAllOnes() {
        #expect(UDP.finish(0xFFFF) == 0xFFFF)
        #expect(UDP.finish(0x1234) == ~UInt16(0x1234))
    }
}
