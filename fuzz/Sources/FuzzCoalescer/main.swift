import FerryWire
import FuzzSupport

// The segment coalescer (userspace GRO) as the TAP writer drives it: 8 slots of 65535 + 18
// bytes, TCP only or TCP and UDP (a TAP with USO), an MTU of 1500 or 9000; a sequence of
// segments offered one by one, then a flush. The first byte chooses the coalescer and the mode.
//
// Built mode: the segments are well-formed TCP (or UDP) over IPv4 or IPv6, with valid
// checksums, in up to four flows, their payload lengths, flags, sequence numbers (in order, a
// retransmission, a gap) and IPv4 IDs chosen by the input. Holds: each emitted buffer is a
// virtio-net header and a frame within the capacity; a super-frame (GSO) cut again by
// Segmentation gives back whole segments; the segments out are as many as the segments in; and,
// flow by flow, the payload bytes out are the payload bytes in, in the same order. A frame sent
// alone without NEEDS_CSUM has a transport checksum that verifies.
//
// Raw mode: the segments are bytes cut from the input as they are (anything a tunnel may carry).
// Holds: no trap, no access out of bounds (AddressSanitizer), each emitted buffer a virtio-net
// header and a frame within the capacity.

let capacity = 65535 + 18
nonisolated(unsafe) let coalescers = [SegmentCoalescer(slots: 8, capacity: capacity, udp: false, mtu: 1500),
                  SegmentCoalescer(slots: 8, capacity: capacity, udp: true, mtu: 1500),
                  SegmentCoalescer(slots: 8, capacity: capacity, udp: false, mtu: 9000),
                  SegmentCoalescer(slots: 8, capacity: capacity, udp: true, mtu: 9000)]
/// Frames are built here, behind 10 bytes of headroom (the `plain` area).
nonisolated(unsafe) let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: 10 + 65536 + 64, alignment: 16)
nonisolated(unsafe) let recut = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 21, alignment: 16)

struct Built {
    var isIPv6 = false
    var isUDP = false
    var l4 = 0
    var payloadAt = 0
    var end = 0
}

/// Where a built frame's transport header and payload are (nil: not one of ours).
func parse(_ frame: UnsafeRawBufferPointer) -> Built? {
    guard frame.count >= 14 else { return nil }
    var b = Built()
    let type = frame.u16(12)
    let proto: UInt8
    if type == EtherType.ipv4 {
        guard frame.count >= 34 else { return nil }
        b.l4 = 14 + Int(frame[14] & 0x0F) * 4
        b.end = 14 + Int(frame.u16(16))
        proto = frame[23]
    } else if type == EtherType.ipv6 {
        guard frame.count >= 54 else { return nil }
        b.isIPv6 = true
        b.l4 = 54
        b.end = 54 + Int(frame.u16(18))
        proto = frame[20]
    } else { return nil }
    b.isUDP = proto == IPProtocol.udp
    guard b.isUDP || proto == IPProtocol.tcp, b.end <= frame.count, b.l4 + (b.isUDP ? 8 : 20) <= b.end else { return nil }
    b.payloadAt = b.l4 + (b.isUDP ? 8 : Int(frame[b.l4 + 12] >> 4) * 4)
    guard b.payloadAt <= b.end else { return nil }
    return b
}

/// The flow a built frame belongs to: its source port's low bits.
func flowOf(_ frame: UnsafeRawBufferPointer, _ b: Built) -> Int { Int(frame.u16(b.l4) & 3) }

func transportChecksumValid(_ frame: UnsafeRawBufferPointer, _ b: Built) -> Bool {
    let proto = b.isUDP ? IPProtocol.udp : IPProtocol.tcp
    let length = b.end - b.l4
    let pseudo = b.isIPv6
        ? InternetChecksum.pseudoHeaderSum(source: IPv6Address(frame, at: 22), destination: IPv6Address(frame, at: 38), protocol: proto, length: length)
        : InternetChecksum.pseudoHeaderSum(source: IPv4Address(frame, at: 26), destination: IPv4Address(frame, at: 30), protocol: proto, length: length)
    return InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: frame[b.l4..<b.end]), initial: pseudo)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var reader = FuzzReader(input(data, size))
    let mode = reader.byte()
    let coalescer = coalescers[Int(mode & 3)]
    let built = mode & 4 == 0
    let ipv6 = mode & 8 != 0
    let udp = mode & 16 != 0 && coalescer.udp
    let dontFragment = mode & 32 != 0

    var payloadIn = [[UInt8]](repeating: [], count: 4)
    var payloadOut = [[UInt8]](repeating: [], count: 4)
    var segmentsIn = 0, segmentsOut = 0
    var sequence: [UInt32] = [1000, 2000, 3000, 4000]
    var ids: [UInt16] = [1, 100, 200, 300]

    func emitted(_ buffer: UnsafeRawBufferPointer) {
        require(buffer.count >= VirtioNetHeader.length + Ethernet.headerLength, "emitted \(buffer.count) bytes")
        let header = VirtioNetHeader(buffer)
        let frame = UnsafeRawBufferPointer(rebasing: buffer[VirtioNetHeader.length...])
        require(frame.count <= capacity, "super-frame of \(frame.count) bytes over the capacity")
        guard built else { return }
        if header.isGSO {
            var cut: [(Int, Int)] = []
            do throws(Segmentation.Failure) {
                _ = try Segmentation.segment(frame, header: header, into: recut) { cut.append(($0, $1)) }
            } catch {
                require(false, "a super-frame of ours is refused by Segmentation: \(error)")
            }
            for (at, length) in cut {
                let segment = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(recut)[at..<(at + length)])
                guard let b = parse(segment) else { require(false, "a cut segment does not parse"); return }
                require(transportChecksumValid(segment, b), "a cut segment's checksum does not verify")
                payloadOut[flowOf(segment, b)] += segment[b.payloadAt..<b.end]
                segmentsOut += 1
            }
        } else {
            guard let b = parse(frame) else { require(false, "a frame alone does not parse"); return }
            if !header.needsChecksum { require(transportChecksumValid(frame, b), "a frame alone has a broken checksum") }
            payloadOut[flowOf(frame, b)] += frame[b.payloadAt..<b.end]
            segmentsOut += 1
        }
    }

    let plain = staging.baseAddress!
    let room = staging.count - VirtioNetHeader.length
    while reader.remaining > 0 {
        let frameArea = UnsafeMutableRawBufferPointer(start: plain + VirtioNetHeader.length, count: room)
        let frame: UnsafeRawBufferPointer
        if built {
            let control = reader.byte()
            let flow = Int(control & 3)
            let lengthChoice = Int(reader.u16())
            let maximum = (coalescer.mtu - (ipv6 ? 40 : 20) - (udp ? 8 : 20))
            let payload = reader.take(lengthChoice % (maximum + 1))
            let l3 = 14, l4 = l3 + (ipv6 ? 40 : 20), at = l4 + (udp ? 8 : 20)
            let l4Length = at - l4 + payload.count
            UnsafeMutableRawBufferPointer(rebasing: frameArea[0..<at]).initializeMemory(as: UInt8.self, repeating: 0)
            frameArea.setU32(0x0200_0000, at: 0); frameArea.setU16(0x0002, at: 4)
            frameArea.setU32(0x0200_0000, at: 6); frameArea.setU16(0x0001, at: 10)
            frameArea.setU16(ipv6 ? EtherType.ipv6 : EtherType.ipv4, at: 12)
            let proto = udp ? IPProtocol.udp : IPProtocol.tcp
            if ipv6 {
                frameArea.setU32(0x6000_0000, at: l3)
                frameArea.setU16(UInt16(l4Length), at: l3 + 4)
                frameArea[l3 + 6] = proto; frameArea[l3 + 7] = 64
                frameArea.setU32(0xfd00_0000, at: l3 + 8); frameArea.setU32(1, at: l3 + 20)
                frameArea.setU32(0xfd00_0000, at: l3 + 24); frameArea.setU32(2, at: l3 + 36)
            } else {
                frameArea.setU16(0x4500, at: l3)
                frameArea.setU16(UInt16(20 + l4Length), at: l3 + 2)
                // An ID in sequence, or not (bit 6); DF by the mode.
                frameArea.setU16(control & 0x40 != 0 ? ids[flow] &+ 7 : ids[flow], at: l3 + 4)
                ids[flow] &+= 1
                frameArea.setU16(dontFragment ? IPv4.flagDontFragment : 0, at: l3 + 6)
                frameArea[l3 + 8] = 64; frameArea[l3 + 9] = proto
                frameArea.setU32(0xc000_0201, at: l3 + 12); frameArea.setU32(0xc000_0202, at: l3 + 16)
                frameArea.setU16(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: frameArea[l3..<l4])), at: l3 + 10)
            }
            frameArea.setU16(UInt16(40000 + flow), at: l4)
            frameArea.setU16(80, at: l4 + 2)
            if udp {
                frameArea.setU16(UInt16(l4Length), at: l4 + 4)
            } else {
                // In order, a retransmission (bit 3) or a gap (bit 4); PSH (bit 2), FIN (bit 5).
                var seq = sequence[flow]
                if control & 8 != 0 { seq &-= UInt32(payload.count) }
                if control & 16 != 0 { seq &+= 1 }
                frameArea.setU32(seq, at: l4 + 4)
                sequence[flow] = seq &+ UInt32(payload.count)
                frameArea.setU32(77, at: l4 + 8)
                frameArea[l4 + 12] = 5 << 4
                frameArea[l4 + 13] = TCP.ack | (control & 4 != 0 ? TCP.psh : 0) | (control & 32 != 0 ? TCP.fin : 0)
                frameArea.setU16(65535, at: l4 + 14)
            }
            if payload.count > 0 { (frameArea.baseAddress! + at).copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
            let whole = UnsafeRawBufferPointer(rebasing: frameArea[0..<(at + payload.count)])
            let pseudo = ipv6
                ? InternetChecksum.pseudoHeaderSum(source: IPv6Address(whole, at: 22), destination: IPv6Address(whole, at: 38), protocol: proto, length: l4Length)
                : InternetChecksum.pseudoHeaderSum(source: IPv4Address(whole, at: 26), destination: IPv4Address(whole, at: 30), protocol: proto, length: l4Length)
            var sum = ~InternetChecksum.add(pseudo, InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: whole[l4...])))
            if udp, sum == 0 { sum = 0xFFFF }
            frameArea.setU16(sum, at: l4 + (udp ? 6 : 16))
            payloadIn[flow] += payload
            segmentsIn += 1
            frame = whole
        } else {
            let length = Int(reader.u16()) % (room + 1)
            let bytes = reader.take(length)
            // The decapsulator hands on inner frames of an Ethernet header at least.
            guard bytes.count >= Ethernet.headerLength else { break }
            if bytes.count > 0 { frameArea.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
            frame = UnsafeRawBufferPointer(rebasing: frameArea[0..<bytes.count])
        }
        coalescer.add(frame, plain: plain, emit: emitted)
    }
    coalescer.flush(emit: emitted)
    if built {
        require(segmentsOut == segmentsIn, "\(segmentsIn) segments in, \(segmentsOut) out")
        for flow in 0..<4 {
            require(payloadOut[flow] == payloadIn[flow],
                    "flow \(flow): \(payloadIn[flow].count) payload bytes in, \(payloadOut[flow].count) out, or not in order")
        }
    }
    return 0
}

@_cdecl("FuzzCoalescer_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzOne)
}
