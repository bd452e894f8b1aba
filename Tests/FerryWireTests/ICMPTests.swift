import Testing
import FerryWire

@Suite struct ICMPTests {
    @Test func fragmentationNeededQuotesTheOriginalAndChecksums() {
        let original = innerFrame(length: 1400)
        let ip = Array(original[14...])
        var out = [UInt8](repeating: 0, count: 1000)
        let n = out.withUnsafeMutableBytes { o in
            ip.withUnsafeBytes { ICMPv4.writeFragmentationNeeded(to: o, at: 0, nextHopMTU: 1450, original: $0) }
        }
        #expect(n == 576 - 20)
        #expect(out[0] == 3 && out[1] == 4)
        #expect(UInt16(out[6]) << 8 | UInt16(out[7]) == 1450)
        #expect(Array(out[8..<n]) == Array(ip[0..<(n - 8)]))
        #expect(referenceSum(Array(out[0..<n])) == 0xFFFF)
    }

    @Test func packetTooBigChecksumsOverThePseudoHeader() {
        let s = IPv6Address("fd00::1")!, d = IPv6Address("fd00::2")!
        let original = [UInt8](repeating: 0x60, count: 2000)
        var out = [UInt8](repeating: 0, count: 1400)
        let n = out.withUnsafeMutableBytes { o in
            original.withUnsafeBytes { ICMPv6.writePacketTooBig(to: o, at: 0, mtu: 1430, original: $0, source: s, destination: d) }
        }
        #expect(n == 1280 - 40)
        #expect(out[0] == 2 && out[1] == 0)
        #expect(UInt32(out[4]) << 24 | UInt32(out[5]) << 16 | UInt32(out[6]) << 8 | UInt32(out[7]) == 1430)
        let pseudo = InternetChecksum.pseudoHeaderSum(source: s, destination: d, protocol: 58, length: n)
        #expect(InternetChecksum.add(pseudo, referenceSum(Array(out[0..<n]))) == 0xFFFF)
    }
}
