import FerryWire
import FuzzSupport

// Decapsulation from every entry point the workers and tools use: an outer Ethernet frame, an
// outer IP packet, a VXLAN payload (UDP socket) and a GRE payload (raw socket), IPv4 or IPv6
// outer addresses, with and without an expected VNI or GRE key. The first two bytes choose the
// entry point and the policy, the next eight the expected VNI and key; the rest is the packet.
// Holds: an accepted packet's inner frame lies inside the input; it carries the expected VNI
// or key when one is set and its tunnel is accepted by the policy; a refusal names a DropReason.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var reader = FuzzReader(input(data, size))
    let choice = reader.byte(), flags = reader.byte()
    let vni = reader.u32() & 0xFF_FFFF, key = reader.u32()
    let checks: [DecapsulationPolicy.ChecksumCheck] = [.ignore, .verify, .report, .verify]
    let policy = DecapsulationPolicy(
        acceptVXLAN: flags & 1 == 0, acceptGRE: flags & 2 == 0,
        vxlanPort: flags & 4 == 0 ? VXLAN.defaultPort : 4790,
        vni: flags & 8 != 0 ? vni : nil, greKey: flags & 16 != 0 ? key : nil,
        udpChecksum: checks[Int(flags >> 5) & 3], acceptZeroIPv6Checksum: flags & 0x80 != 0,
        verifyGREChecksum: choice & 0x80 == 0)
    let decapsulator = Decapsulator(policy: policy)
    let bytes = reader.rest()
    let v6 = choice & 4 != 0
    let source: IPAddress = v6 ? .v6(IPv6Address(high: 0xfd00 << 48, low: 1)) : .v4(IPv4Address(192, 0, 2, 1))
    let destination: IPAddress = v6 ? .v6(IPv6Address(high: 0xfd00 << 48, low: 2)) : .v4(IPv4Address(192, 0, 2, 2))
    let result: DecapsulationResult
    switch choice & 3 {
    case 0: result = decapsulator.decapsulate(frame: bytes)
    case 1: result = decapsulator.decapsulate(ipPacket: bytes)
    case 2: result = decapsulator.decapsulate(vxlanPayload: bytes, source: source, destination: destination, sourcePort: 49152)
    default: result = decapsulator.decapsulate(grePayload: bytes, source: source, destination: destination)
    }
    switch result {
    case .packet(let packet):
        require(packet.inner.lowerBound >= 0 && packet.inner.upperBound <= bytes.count,
                "inner frame \(packet.inner) outside the \(bytes.count)-byte input")
        require(packet.inner.count >= Ethernet.headerLength, "inner frame of \(packet.inner.count) bytes accepted")
        switch packet.kind {
        case .vxlan:
            require(policy.acceptVXLAN || choice & 3 == 2, "VXLAN accepted against the policy")
            if let expected = policy.vni { require(packet.vni == expected, "VNI \(String(describing: packet.vni)) accepted, \(expected) expected") }
        case .gre:
            require(policy.acceptGRE || choice & 3 == 3, "GRE accepted against the policy")
            if let expected = policy.greKey { require(packet.greKey == expected, "key \(String(describing: packet.greKey)) accepted, \(expected) expected") }
        }
    case .drop(let reason):
        require(!reason.name.isEmpty && DropReason(rawValue: reason.rawValue) == reason, "refusal without a named reason")
    }
    return 0
}

@_cdecl("FuzzDecapsulation_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzOne)
}
