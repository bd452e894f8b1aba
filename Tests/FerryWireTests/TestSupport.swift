import FerryWire

/// The naive RFC 1071 sum, word by word, to check the fast one against.
func referenceSum(_ bytes: [UInt8]) -> UInt16 {
    var sum: UInt32 = 0
    var i = 0
    while i + 1 < bytes.count {
        sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
        i += 2
    }
    if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
    while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
    return UInt16(sum)
}

func sum(_ bytes: [UInt8]) -> UInt16 { bytes.withUnsafeBytes { InternetChecksum.sum($0) } }

let macA = MACAddress(0x02, 0xAA, 0, 0, 0, 0x01)
let macB = MACAddress(0x02, 0xBB, 0, 0, 0, 0x02)
let v4A = IPAddress.v4(IPv4Address(10, 99, 0, 1))
let v4B = IPAddress.v4(IPv4Address(10, 99, 0, 2))
let v6A = IPAddress.v6(IPv6Address("fd00:99::1")!)
let v6B = IPAddress.v6(IPv6Address("fd00:99::2")!)

/// An inner frame of a given total length: UDP over IPv4 between two containers, optionally
/// VLAN-tagged. Lengths below the smallest such frame come out as raw EtherType frames.
func innerFrame(length: Int, vlan: UInt16? = nil, seed: UInt8 = 0) -> [UInt8] {
    let tag = vlan == nil ? 0 : 4
    let udpOverhead = 14 + tag + 20 + 8
    if length >= udpOverhead {
        return FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, vlan: vlan,
                                  source: .v4(IPv4Address(10, 17, 0, 2)), destination: .v4(IPv4Address(10, 18, 0, 3)),
                                  payload: .udp(sourcePort: 40000 &+ UInt16(seed), destinationPort: 5201,
                                                data: FrameBuilder.pattern(length - udpOverhead, seed: seed)),
                                  pad: false)
    }
    return FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, vlan: vlan,
                              payload: .raw(etherType: 0x88B5, data: FrameBuilder.pattern(max(0, length - 14 - tag))),
                              pad: false)
}

/// Encapsulates `inner` as a full outer frame with `options`; returns the outer frame.
func encapsulate(_ inner: [UInt8], with template: EncapsulationTemplate, flowHash: UInt32? = nil) -> [UInt8] {
    let headroom = 128
    var buffer = [UInt8](repeating: 0xEE, count: headroom + inner.count)
    buffer.replaceSubrange(headroom..., with: inner)
    let start = buffer.withUnsafeMutableBytes {
        template.encapsulateFrame(in: $0, innerOffset: headroom, innerLength: inner.count, flowHash: flowHash)
    }
    return Array(buffer[start...])
}

func decapsulate(_ frame: [UInt8], policy: DecapsulationPolicy = DecapsulationPolicy()) -> DecapsulationResult {
    frame.withUnsafeBytes { Decapsulator(policy: policy).decapsulate(frame: $0) }
}

func options(_ encapsulation: Encapsulation, ipv6: Bool = false, udpChecksum: Bool? = nil,
             dontFragment: DFPolicy = .unset, tos: TOSPolicy = .fixed(0), ttl: UInt8 = 64) -> TunnelOptions {
    try! TunnelOptions(encapsulation: encapsulation, local: ipv6 ? v6A : v4A, remote: ipv6 ? v6B : v4B,
                       ttl: ttl, tos: tos, dontFragment: dontFragment, udpChecksum: udpChecksum,
                       localMAC: macA, remoteMAC: macB)
}

/// Parses hex with optional spaces: "0800 0000".
func hex(_ s: String) -> [UInt8] {
    let digits = s.filter { !$0.isWhitespace }
    var out: [UInt8] = []
    var i = digits.startIndex
    while i < digits.endIndex {
        let j = digits.index(i, offsetBy: 2)
        out.append(UInt8(digits[i..<j], radix: 16)!)
        i = j
    }
    return out
}

let referenceDirectory: String = {
    let file = #filePath
    let testsDir = file.split(separator: "/").dropLast(2).joined(separator: "/")
    return "/" + testsDir + "/Fixtures/reference"
}()
