import FerryWire
import FuzzSupport

// The segmentation of a TAP super-frame (userspace GSO) as the workers do it: a virtio-net
// header and a frame as a TAP with TSO/USO delivers them (the first 10 bytes of the input, the
// rest the frame, at most 65535 + 18 bytes), cut into the segment area — 1 MiB, or, when the
// input's 11th byte is odd, only the 2 × frame bytes the worker guarantees free — by `segment` (the raw paths) and by `segmentHeaders`
// behind a VXLAN header's gap (the UDP GSO path). Holds: either a refusal with a named drop
// reason, or segments that lie inside the area one after another without overlap, whose
// number `segment` returns, each with at most gso_size payload bytes; all segments but the last
// full; their payloads, joined, are the super-frame's payload; every segment's IP and UDP length
// fields match its length; its IPv4 header checksum and its transport checksum verify (over
// IPv6, when no extension header lies between, whose routing header would change the
// pseudo-header); and the two forms agree segment by segment.

nonisolated(unsafe) let area = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
nonisolated(unsafe) let headerArea = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
let gap = VXLAN.headerLength

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var reader = FuzzReader(input(data, size))
    let rawHeader = reader.take(VirtioNetHeader.length)
    guard rawHeader.count == VirtioNetHeader.length else { return 0 }
    let header = VirtioNetHeader(rawHeader)
    let tight = reader.byte() & 1 == 1
    let frame = reader.take(65535 + 18)
    let output = UnsafeMutableRawBufferPointer(rebasing: area[0..<(tight ? min(area.count, 2 * frame.count) : area.count)])

    var pieces: [(at: Int, length: Int)] = []
    let count: Int
    do throws(Segmentation.Failure) {
        count = try Segmentation.segment(frame, header: header, into: output) { pieces.append(($0, $1)) }
    } catch {
        require(!error.dropReason.name.isEmpty, "refusal without a named reason")
        return 0
    }
    require(count == pieces.count && count >= 1, "\(count) segments returned, \(pieces.count) emitted")
    let mss = Int(header.gsoSize)
    var end = 0
    var payloadOut = 0
    var headerLength = -1
    let out = UnsafeRawBufferPointer(output)
    for (i, piece) in pieces.enumerated() {
        require(piece.at >= end && piece.at + piece.length <= output.count, "segment \(i) at \(piece.at)+\(piece.length) overlaps or overruns")
        end = piece.at + piece.length
        let segment = UnsafeRawBufferPointer(rebasing: out[piece.at..<end])
        guard let eth = EthernetView(segment) else { require(false, "segment \(i) has no Ethernet header"); return 0 }
        let l3 = eth.payloadOffset
        let l4 = Int(header.checksumStart)
        let isUDP = header.gsoType & ~VirtioNetHeader.gsoECN == VirtioNetHeader.gsoUDPL4
        let thisHeader = isUDP ? l4 + 8 : l4 + Int(segment[l4 + 12] >> 4) * 4
        if headerLength < 0 { headerLength = thisHeader }
        require(thisHeader == headerLength, "segment \(i) has a header of \(thisHeader) bytes, the first \(headerLength)")
        let payload = piece.length - headerLength
        require(payload >= 0 && payload <= mss, "segment \(i) carries \(payload) bytes, gso_size \(mss)")
        if i < pieces.count - 1 { require(payload == mss, "segment \(i) of \(pieces.count) is short: \(payload) of \(mss)") }
        require(segment[headerLength...].elementsEqual(frame[(headerLength + payloadOut)...].prefix(payload)),
                "segment \(i)'s payload is not the super-frame's")
        payloadOut += payload
        let pseudo: UInt16
        let proto = isUDP ? IPProtocol.udp : IPProtocol.tcp
        if eth.etherType == EtherType.ipv4 {
            require(Int(segment.u16(l3 + 2)) == piece.length - l3, "segment \(i): IPv4 total length \(segment.u16(l3 + 2)), \(piece.length - l3) bytes")
            require(InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: segment[l3..<l4])), "segment \(i): IPv4 header checksum")
            pseudo = InternetChecksum.pseudoHeaderSum(source: IPv4Address(segment, at: l3 + 12), destination: IPv4Address(segment, at: l3 + 16),
                                                      protocol: proto, length: piece.length - l4)
        } else {
            require(Int(segment.u16(l3 + 4)) == piece.length - l3 - IPv6.headerLength, "segment \(i): IPv6 payload length")
            pseudo = InternetChecksum.pseudoHeaderSum(source: IPv6Address(segment, at: l3 + 8), destination: IPv6Address(segment, at: l3 + 24),
                                                      protocol: proto, length: piece.length - l4)
        }
        let plainIPv6 = eth.etherType == EtherType.ipv6 && l4 == l3 + IPv6.headerLength
        if isUDP { require(Int(segment.u16(l4 + 4)) == piece.length - l4, "segment \(i): UDP length") }
        if eth.etherType == EtherType.ipv4 || plainIPv6 {
            require(InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: segment[l4...]), initial: pseudo),
                    "segment \(i): transport checksum")
        }
    }
    require(payloadOut == frame.count - headerLength, "\(frame.count - headerLength) payload bytes in, \(payloadOut) out")

    // The scatter-gather form: the same segments, headers in the area behind a gap, payloads in place.
    var headers: [(at: Int, length: Int, payloadAt: Int, payload: Int)] = []
    let gathered: Int
    do throws(Segmentation.Failure) {
        gathered = try Segmentation.segmentHeaders(frame, header: header, into: headerArea, gap: gap) { headers.append(($0, $1, $2, $3)) }
    } catch {
        require(false, "segmentHeaders refuses what segment accepted: \(error)")
        return 0
    }
    require(gathered == count, "segmentHeaders: \(gathered) segments, segment: \(count)")
    let headerOut = UnsafeRawBufferPointer(headerArea)
    for (i, h) in headers.enumerated() {
        require(h.at >= gap && h.at + h.length <= headerArea.count, "headers of segment \(i) overrun")
        require(h.payloadAt >= 0 && h.payloadAt + h.payload <= frame.count, "payload of segment \(i) outside the frame")
        let piece = pieces[i]
        require(h.length + h.payload == piece.length, "segment \(i): lengths differ between the forms")
        require(headerOut[h.at..<(h.at + h.length)].elementsEqual(out[piece.at..<(piece.at + h.length)]),
                "segment \(i): headers differ between the forms")
    }
    return 0
}

@_cdecl("FuzzSegmentation_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzOne)
}
