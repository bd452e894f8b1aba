/// The pcapng block format (draft-ietf-opsawg-pcapng), as far as Ferry writes and reads it: a
/// section header, one interface description per capture point (named, so that Wireshark's and
/// tshark's interface column says which), and enhanced packet blocks whose comment option
/// carries what a classic pcap cannot (why a packet was dropped, by which worker). libpcap reads
/// pcapng but writes only pcap, and hands over no options: `PcapngEncoder` writes the blocks,
/// `PcapngBlocks` reads them back with their comments.
///
/// Written in this host's byte order (the section's magic says which); timestamps in
/// microseconds, pcapng's default resolution, so no `if_tsresol` is needed.
public enum Pcapng {
    public static let sectionHeaderType: UInt32 = 0x0A0D_0D0A
    public static let interfaceDescriptionType: UInt32 = 1
    public static let simplePacketType: UInt32 = 3
    public static let enhancedPacketType: UInt32 = 6
    public static let interfaceStatisticsType: UInt32 = 5
    public static let byteOrderMagic: UInt32 = 0x1A2B_3C4D

    static let optionEnd: UInt16 = 0
    static let optionComment: UInt16 = 1
    static let optionApplication: UInt16 = 4  // shb_userappl
    static let optionName: UInt16 = 2  // if_name
    static let optionDescription: UInt16 = 3  // if_description
    static let optionTimestampResolution: UInt16 = 9  // if_tsresol

    /// The largest block either side accepts: a 256 KiB packet with its options, with room to spare.
    public static let maximumBlockLength = 1 << 20
}

/// Appends pcapng blocks to a byte array; the caller sends or writes the bytes. Allocation-free
/// once `bytes` has its capacity (`reserveCapacity`), which is what a writer that drains a ring
/// wants.
public struct PcapngEncoder: Sendable {
    public var bytes: [UInt8] = []

    public init() {}

    /// The section header: the start of a stream, or of a file. `application` names the writer
    /// (`shb_userappl`), as tcpdump's and dumpcap's do.
    public mutating func sectionHeader(application: String? = nil) {
        let start = beginBlock(Pcapng.sectionHeaderType)
        append32(Pcapng.byteOrderMagic)
        append16(1)
        append16(0)
        append64(UInt64.max)  // section length unknown: a stream
        if let application { option(Pcapng.optionApplication, Array(application.utf8)) }
        endOptions()
        endBlock(start)
    }

    /// An interface: its link type, snapshot length, name (`if_name`) and description. The
    /// first one written in a section is interface 0, the next 1, and so on.
    public mutating func interfaceDescription(linkType: LinkType = .ethernet, snapshotLength: Int, name: String?,
                                              description: String? = nil) {
        let start = beginBlock(Pcapng.interfaceDescriptionType)
        append16(UInt16(truncatingIfNeeded: linkType.rawValue))
        append16(0)
        append32(UInt32(clamping: snapshotLength))
        if let name { option(Pcapng.optionName, Array(name.utf8)) }
        if let description { option(Pcapng.optionDescription, Array(description.utf8)) }
        endOptions()
        endBlock(start)
    }

    /// A packet seen on interface `interface`: `captured` of its `originalLength` bytes, with an
    /// optional comment (`opt_comment`, which tshark shows as `frame.comment`).
    public mutating func enhancedPacket(interface: Int, timestamp: PacketTimestamp, captured: UnsafeRawBufferPointer,
                                        originalLength: Int, comment: String? = nil) {
        let start = beginBlock(Pcapng.enhancedPacketType)
        append32(UInt32(truncatingIfNeeded: interface))
        let micros = UInt64(bitPattern: timestamp.seconds &* 1_000_000 &+ Int64(timestamp.microseconds))
        append32(UInt32(truncatingIfNeeded: micros >> 32))
        append32(UInt32(truncatingIfNeeded: micros))
        append32(UInt32(captured.count))
        append32(UInt32(clamping: max(originalLength, captured.count)))
        bytes.append(contentsOf: captured)
        pad()
        if let comment {
            option(Pcapng.optionComment, Array(comment.utf8))
            endOptions()
        }
        endBlock(start)
    }

    /// Statistics of interface `interface` at `timestamp` (an interface statistics block):
    /// `received` packets seen (`isb_ifrecv`), `dropped` of them lost (`isb_ifdrop`), with a
    /// comment. `capinfos` and Wireshark's capture file properties show them; Ferry writes one
    /// at the end of a `ctl capture` stream, with its loss count.
    public mutating func interfaceStatistics(interface: Int, timestamp: PacketTimestamp, received: UInt64, dropped: UInt64,
                                             comment: String? = nil) {
        let start = beginBlock(Pcapng.interfaceStatisticsType)
        append32(UInt32(truncatingIfNeeded: interface))
        let micros = UInt64(bitPattern: timestamp.seconds &* 1_000_000 &+ Int64(timestamp.microseconds))
        append32(UInt32(truncatingIfNeeded: micros >> 32))
        append32(UInt32(truncatingIfNeeded: micros))
        if let comment { option(Pcapng.optionComment, Array(comment.utf8)) }
        option(4, withUnsafeBytes(of: received) { Array($0) })  // isb_ifrecv
        option(5, withUnsafeBytes(of: dropped) { Array($0) })  // isb_ifdrop
        endOptions()
        endBlock(start)
    }

    // MARK: -

    mutating func beginBlock(_ type: UInt32) -> Int {
        let start = bytes.count
        append32(type)
        append32(0)  // total length, set by endBlock
        return start
    }

    mutating func endBlock(_ start: Int) {
        let length = UInt32(bytes.count - start + 4)
        append32(length)
        withUnsafeBytes(of: length) { bytes.replaceSubrange((start + 4)..<(start + 8), with: $0) }
    }

    mutating func option(_ code: UInt16, _ value: [UInt8]) {
        // An option's value is at most 65535 bytes; a longer comment is cut (on a character boundary not guaranteed).
        let value = value.prefix(0xFFF0)
        append16(code)
        append16(UInt16(value.count))
        bytes.append(contentsOf: value)
        pad()
    }

    mutating func endOptions() {
        append16(Pcapng.optionEnd)
        append16(0)
    }

    mutating func pad() { bytes.append(contentsOf: repeatElement(0, count: (4 - bytes.count % 4) % 4)) }
    mutating func append16(_ v: UInt16) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
    mutating func append32(_ v: UInt32) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
    mutating func append64(_ v: UInt64) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
}

/// The packets of a pcapng file with what libpcap does not hand over: the interface each was
/// seen on (and its name) and its comments. Sections of either byte order; interfaces'
/// timestamp resolutions (`if_tsresol`) applied; unknown block types skipped. Bounded: a block
/// longer than `Pcapng.maximumBlockLength`, or a length that runs past the data, ends the
/// reading with an error, never a trap or an allocation of what a header claims.
public struct PcapngBlocks: Sequence {
    public struct Interface: Equatable, Sendable {
        public var linkType: Int
        public var name: String?
        public var description: String?
        /// Timestamp units per second (10^6 unless `if_tsresol` says otherwise).
        public var unitsPerSecond: UInt64
    }

    public struct Packet {
        /// Index into `interfaces` of its section.
        public var interface: Int
        public var interfaceName: String?
        public var timestamp: PacketTimestamp
        public var data: ArraySlice<UInt8>
        public var originalLength: Int
        public var comments: [String]
    }

    public enum ReadError: Error, Equatable, CustomStringConvertible {
        case notPcapng
        case malformed(offset: Int, reason: String)
        public var description: String {
            switch self {
            case .notPcapng: "not a pcapng file (no section header block first)"
            case .malformed(let offset, let reason): "pcapng block at byte \(offset): \(reason)"
            }
        }
    }

    public let data: [UInt8]

    /// Whether `prefix` starts like a pcapng file.
    public static func isPcapng(_ prefix: some Collection<UInt8>) -> Bool {
        prefix.count >= 4 && Array(prefix.prefix(4)) == [0x0A, 0x0D, 0x0D, 0x0A]
    }

    public init(_ data: [UInt8]) { self.data = data }

    public func makeIterator() -> Iterator { Iterator(data: data) }

    /// Every packet, or the first error met.
    public func packets() throws(ReadError) -> [Packet] {
        var it = makeIterator()
        var out: [Packet] = []
        while let p = try it.nextPacket() { out.append(p) }
        return out
    }

    public struct Iterator: IteratorProtocol {
        let data: [UInt8]
        var at = 0
        var bigEndian = false
        public private(set) var interfaces: [Interface] = []
        public private(set) var failure: ReadError?

        init(data: [UInt8]) { self.data = data }

        /// Stops at the first error (kept in `failure`).
        public mutating func next() -> Packet? {
            do { return try nextPacket() } catch {
                failure = error
                return nil
            }
        }

        public mutating func nextPacket() throws(ReadError) -> Packet? {
            while at + 12 <= data.count {
                let start = at
                if start == 0 || u32(start) == Pcapng.sectionHeaderType {
                    guard u32raw(start, big: false) == Pcapng.sectionHeaderType, start + 12 <= data.count else { throw .notPcapng }
                    let magic = u32raw(start + 8, big: false)
                    if magic == Pcapng.byteOrderMagic {
                        bigEndian = false
                    } else if magic == Pcapng.byteOrderMagic.byteSwapped {
                        bigEndian = true
                    } else {
                        throw start == 0 ? .notPcapng : .malformed(offset: start, reason: "bad byte-order magic")
                    }
                    interfaces = []
                }
                let type = u32(start), length = Int(u32(start + 4))
                guard length >= 12, length % 4 == 0, length <= Pcapng.maximumBlockLength, start + length <= data.count else {
                    throw .malformed(offset: start, reason: "block length \(length) is not a multiple of 4 from 12 to "
                                     + "\(Pcapng.maximumBlockLength) within the file")
                }
                guard Int(u32(start + length - 4)) == length else {
                    throw .malformed(offset: start, reason: "the trailing length differs from the leading one")
                }
                at = start + length
                let body = (start + 8)..<(start + length - 4)
                switch type {
                case Pcapng.sectionHeaderType:
                    continue
                case Pcapng.interfaceDescriptionType:
                    guard body.count >= 8 else { throw .malformed(offset: start, reason: "interface description too short") }
                    var interface = Interface(linkType: Int(u16(body.lowerBound)), unitsPerSecond: 1_000_000)
                    for (code, value) in try options(body.lowerBound + 8, body.upperBound, block: start) {
                        switch code {
                        case Pcapng.optionName: interface.name = String(decoding: value, as: UTF8.self)
                        case Pcapng.optionDescription: interface.description = String(decoding: value, as: UTF8.self)
                        case Pcapng.optionTimestampResolution where value.count >= 1:
                            let r = value[value.startIndex]
                            let exponent = UInt64(r & 0x7F)
                            // 10^-n or 2^-n seconds; beyond 10^-9 (or 2^-63) nothing Ferry reads.
                            interface.unitsPerSecond = r & 0x80 == 0 ? (exponent <= 9 ? (0..<exponent).reduce(1) { a, _ in a * 10 } : 1_000_000_000)
                                : UInt64(1) << Swift.min(exponent, 63)
                        default: break
                        }
                    }
                    interfaces.append(interface)
                case Pcapng.enhancedPacketType:
                    guard body.count >= 20 else { throw .malformed(offset: start, reason: "enhanced packet block too short") }
                    let b = body.lowerBound
                    let index = Int(u32(b))
                    guard index < interfaces.count else {
                        throw .malformed(offset: start, reason: "packet on interface \(index), which no interface block described")
                    }
                    let units = UInt64(u32(b + 4)) << 32 | UInt64(u32(b + 8))
                    let captured = Int(u32(b + 12)), original = Int(u32(b + 16))
                    let dataEnd = b + 20 + captured
                    guard captured <= body.count - 20 else {
                        throw .malformed(offset: start, reason: "captured length \(captured) runs past the block")
                    }
                    var comments: [String] = []
                    let optionsStart = b + 20 + (captured + 3) / 4 * 4
                    if optionsStart < body.upperBound {
                        for (code, value) in try options(optionsStart, body.upperBound, block: start) where code == Pcapng.optionComment {
                            comments.append(String(decoding: value, as: UTF8.self))
                        }
                    }
                    let perSecond = interfaces[index].unitsPerSecond
                    let seconds = units / perSecond, rest = units % perSecond
                    let micros = perSecond >= 1_000_000 ? rest / (perSecond / 1_000_000) : rest * (1_000_000 / perSecond)
                    return Packet(interface: index, interfaceName: interfaces[index].name,
                                  timestamp: PacketTimestamp(seconds: Int64(clamping: seconds), microseconds: Int32(micros)),
                                  data: data[(b + 20)..<dataEnd], originalLength: original, comments: comments)
                case Pcapng.simplePacketType:
                    guard body.count >= 4, !interfaces.isEmpty else {
                        throw .malformed(offset: start, reason: "simple packet block without an interface, or too short")
                    }
                    let original = Int(u32(body.lowerBound))
                    let captured = Swift.min(original, body.count - 4)
                    return Packet(interface: 0, interfaceName: interfaces[0].name, timestamp: PacketTimestamp(seconds: 0, microseconds: 0),
                                  data: data[(body.lowerBound + 4)..<(body.lowerBound + 4 + captured)], originalLength: original,
                                  comments: [])
                default:
                    continue
                }
            }
            if at < data.count { throw .malformed(offset: at, reason: "\(data.count - at) bytes left over, too few for a block") }
            return nil
        }

        /// Options from `from` to `end`: (code, value) until opt_endofopt or the end.
        func options(_ from: Int, _ end: Int, block: Int) throws(ReadError) -> [(UInt16, ArraySlice<UInt8>)] {
            var out: [(UInt16, ArraySlice<UInt8>)] = []
            var o = from
            while o + 4 <= end {
                let code = u16(o), length = Int(u16(o + 2))
                if code == Pcapng.optionEnd { break }
                guard o + 4 + length <= end else { throw .malformed(offset: block, reason: "option \(code) runs past its block") }
                out.append((code, data[(o + 4)..<(o + 4 + length)]))
                o += 4 + (length + 3) / 4 * 4
            }
            return out
        }

        func u16(_ o: Int) -> UInt16 {
            let v = UInt16(data[o]) | UInt16(data[o + 1]) << 8
            return bigEndian ? v.byteSwapped : v
        }
        func u32(_ o: Int) -> UInt32 { u32raw(o, big: bigEndian) }
        func u32raw(_ o: Int, big: Bool) -> UInt32 {
            let v = UInt32(data[o]) | UInt32(data[o + 1]) << 8 | UInt32(data[o + 2]) << 16 | UInt32(data[o + 3]) << 24
            return big ? v.byteSwapped : v
        }
    }
}
