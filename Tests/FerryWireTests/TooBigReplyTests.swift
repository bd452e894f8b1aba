import FerryWire
import Testing

@Suite struct TooBigReplyTests {
    static let sender4 = IPv4Address(10, 17, 0, 2), target4 = IPv4Address(10, 18, 0, 3)

    func frame(from source: IPv4Address = sender4, to destination: IPv4Address = target4, destinationMAC: MACAddress = macB,
               dontFragment: Bool = true, vlan: UInt16? = nil, payload: FrameBuilder.Payload? = nil) -> [UInt8] {
        FrameBuilder.frame(destinationMAC: destinationMAC, sourceMAC: macA, vlan: vlan,
                           source: .v4(source), destination: .v4(destination), dontFragment: dontFragment,
                           payload: payload ?? .udp(sourcePort: 40000, destinationPort: 5201, data: FrameBuilder.pattern(1600)),
                           pad: false)
    }

    func reply(_ frame: [UInt8], innerMTU: Int = 1436) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: TooBigReply.maximumLength)
        let n = out.withUnsafeMutableBytes { o in frame.withUnsafeBytes { TooBigReply.write(answering: $0, innerMTU: innerMTU, to: o) } }
        return n.map { Array(out[0..<$0]) }
    }

    @Test func ipv4WithDFGetsFragmentationNeededFromTheDestination() throws {
        let original = frame()
        let r = try #require(reply(original))
        // Back to the sender's MAC, from the MAC it was sending to.
        #expect(Array(r[0..<6]) == Array(original[6..<12]))
        #expect(Array(r[6..<12]) == Array(original[0..<6]))
        #expect(r[12] == 0x08 && r[13] == 0x00)
        // From the address the sender was trying to reach, to the sender.
        #expect(Array(r[26..<30]) == [10, 18, 0, 3])
        #expect(Array(r[30..<34]) == [10, 17, 0, 2])
        #expect(r[23] == IPProtocol.icmp)
        #expect(r[34] == ICMPv4.destinationUnreachable && r[35] == ICMPv4.codeFragmentationNeeded)
        #expect(Int(r[40]) << 8 | Int(r[41]) == 1436)
        // The quote starts with the original IP header.
        #expect(Array(r[42..<62]) == Array(original[14..<34]))
        #expect(r.count == 14 + ICMPv4.maximumErrorDatagram)
    }

    @Test func noErrorWhereNoneMayGo() {
        #expect(reply(frame(dontFragment: false)) == nil, "no DF: the router may fragment, no error")
        #expect(reply(frame(destinationMAC: .broadcast)) == nil, "to a group")
        #expect(reply(frame(to: IPv4Address(224, 0, 0, 5))) == nil, "to a multicast address")
        #expect(reply(frame(from: IPv4Address(127, 0, 0, 1))) == nil, "from loopback")
        #expect(reply(frame(from: IPv4Address(0, 0, 0, 0))) == nil, "from the unspecified address")
        #expect(reply(frame(vlan: 7)) == nil, "VLAN-tagged")
        var fragment = frame()
        fragment[20] = 0x40 | 0x01  // DF and a fragment offset: not the first fragment
        #expect(reply(fragment) == nil, "a non-first fragment")
    }

    @Test func onlyEchoesAmongICMPAreAnswered() throws {
        let echo = frame(payload: .icmpEcho(request: true, identifier: 1, sequence: 1, data: FrameBuilder.pattern(1600)))
        #expect(reply(echo) != nil)
        var error = echo
        error[34] = ICMPv4.destinationUnreachable  // an ICMP error is never answered with one
        #expect(reply(error) == nil)
    }

    @Test func ipv6GetsPacketTooBigNoSmallerThan1280() throws {
        let s = IPv6Address("fd00:17::2")!, d = IPv6Address("fd00:18::3")!
        let original = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: .v6(s), destination: .v6(d),
                                          payload: .udp(sourcePort: 1, destinationPort: 2, data: FrameBuilder.pattern(1600)),
                                          pad: false)
        let r = try #require(reply(original, innerMTU: 1000))
        #expect(r[12] == 0x86 && r[13] == 0xDD)
        #expect(r[20] == IPProtocol.icmpv6)
        #expect(Array(r[22..<38]) == Array(original[38..<54]), "from the destination")
        #expect(Array(r[38..<54]) == Array(original[22..<38]), "to the sender")
        #expect(r[54] == ICMPv6.packetTooBig)
        #expect(UInt32(r[58]) << 24 | UInt32(r[59]) << 16 | UInt32(r[60]) << 8 | UInt32(r[61]) == 1280)
        #expect(r.count == TooBigReply.maximumLength)
        let multicast = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: .v6(s),
                                           destination: .v6(IPv6Address("ff02::1")!),
                                           payload: .udp(sourcePort: 1, destinationPort: 2, data: [1]), pad: false)
        #expect(reply(multicast) == nil)
    }
}
