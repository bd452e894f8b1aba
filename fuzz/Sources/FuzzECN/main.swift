import FerryWire
import FuzzSupport

// The ECN step of decapsulation (RFC 6040), in place on an inner frame: the first byte is the
// outer header's TOS/traffic class, the rest the inner frame. Holds: without CE outside, or
// when the outcome is `.unchanged`, no byte changes; a drop happens only for CE outside; a
// mark changes only the inner IP header's first 12 bytes, leaves CE in its ECN field, and an
// IPv4 header checksum that verified before verifies after.

nonisolated(unsafe) let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 17, alignment: 16)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var reader = FuzzReader(input(data, size))
    let outer = reader.byte()
    let original = reader.take(scratch.count)
    let frame = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<original.count])
    if original.count > 0 { frame.baseAddress!.copyMemory(from: original.baseAddress!, byteCount: original.count) }
    let bytes = UnsafeRawBufferPointer(frame)
    // Where the inner IP header is, as ECN finds it (past up to two VLAN tags).
    let l3 = EthernetView(bytes)?.payloadOffset ?? 0
    let ipv4Before = ipv4HeaderValid(bytes, at: l3)
    let outcome = ECN.decapsulate(outer: outer, frame: frame)
    var changed: [Int] = []
    for i in 0..<original.count where original[i] != bytes[i] { changed.append(i) }
    switch outcome {
    case .unchanged:
        require(changed.isEmpty, "unchanged, yet bytes \(changed) differ")
    case .drop:
        require(outer & 3 == ECN.ce, "dropped without CE outside (outer \(outer))")
        require(changed.isEmpty, "dropped, yet bytes \(changed) differ")
    case .marked:
        require(outer & 3 == ECN.ce, "marked without CE outside (outer \(outer))")
        require(changed.allSatisfy { $0 >= l3 && $0 < l3 + 12 }, "marking changed bytes \(changed), IP header at \(l3)")
        if bytes[l3] >> 4 == 4 {
            require(bytes[l3 + 1] & 3 == ECN.ce, "IPv4 TOS \(bytes[l3 + 1]) after marking")
            if ipv4Before { require(ipv4HeaderValid(bytes, at: l3), "IPv4 header checksum broken by marking") }
        } else {
            require((bytes[l3 + 1] >> 4) & 3 == ECN.ce, "IPv6 traffic class not CE after marking")
        }
    }
    return 0
}

/// An IPv4 header at `l3`, whole in `bytes`, whose checksum verifies.
func ipv4HeaderValid(_ bytes: UnsafeRawBufferPointer, at l3: Int) -> Bool {
    guard bytes.count >= l3 + IPv4.minimumHeaderLength, bytes[l3] >> 4 == 4 else { return false }
    let headerLength = Int(bytes[l3] & 0x0F) * 4
    guard headerLength >= IPv4.minimumHeaderLength, l3 + headerLength <= bytes.count else { return false }
    return InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: bytes[l3..<(l3 + headerLength)]))
}

@_cdecl("FuzzECN_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzOne)
}
