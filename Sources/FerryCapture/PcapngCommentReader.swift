import Glibc

/// The packet comments of a pcapng file, read one block at a time beside libpcap's reading of
/// the packets (libpcap reads pcapng but hands over no options), so that a file of any size
/// shows its comments in bounded memory: a block's header is read, its packet bytes are
/// skipped with a seek, and only its options are read (a few bytes; at most
/// `Pcapng.maximumBlockLength`).
///
/// `next()` gives one list per packet block — enhanced (6), simple (3) and the obsolete packet
/// block (2), the three libpcap returns as packets — in file order, so the n-th list belongs to
/// libpcap's n-th frame. Other blocks are skipped. At the first block that does not parse (or
/// the end of the file), `next()` returns nil from then on (`failure` says why, for a bad block).
public final class PcapngCommentReader {
    let file: UnsafeMutablePointer<FILE>
    var bigEndian = false
    var offset = 0
    var done = false
    var buffer: [UInt8] = []
    /// How many bytes the last `read` asked for.
    var lastRead = 0
    public private(set) var failure: String?

    /// Nil for standard input ("-"), a file that cannot be opened, or one that is not pcapng.
    public init?(path: String) {
        guard path != "-", let f = fopen(path, "rb") else { return nil }
        var magic = [UInt8](repeating: 0, count: 4)
        guard fread(&magic, 1, 4, f) == 4, PcapngBlocks.isPcapng(magic), fseeko(f, 0, SEEK_SET) == 0 else {
            fclose(f)
            return nil
        }
        file = f
    }

    deinit { fclose(file) }

    /// The comments of the next packet block; nil after the last one (or a block that does not parse).
    public func next() -> [String]? {
        while !done {
            guard read(8) else { return finish(nil) }
            let blockStart = offset - 8
            let rawType = u32(0, big: false)
            if rawType == Pcapng.sectionHeaderType {
                // The byte-order magic follows the length: it says how to read the length.
                guard read(4, at: 8) else { return finish("section header cut short at offset \(blockStart)") }
                let magic = u32(8, big: false)
                if magic == Pcapng.byteOrderMagic { bigEndian = false } else if magic == Pcapng.byteOrderMagic.byteSwapped {
                    bigEndian = true
                } else {
                    return finish("bad byte-order magic at offset \(blockStart)")
                }
            }
            let type = u32(0, big: bigEndian), length = Int(u32(4, big: bigEndian))
            guard length >= 12, length % 4 == 0 else { return finish("block length \(length) at offset \(blockStart)") }
            let bodyRead = offset - blockStart - 8  // bytes of the body already read (the SHB's magic)
            let bodyLength = length - 12
            switch type {
            case Pcapng.enhancedPacketType, 2:
                // EPB: interface (4), timestamp (8), captured and original lengths (4 + 4).
                // The obsolete packet block: interface (2), drops (2), then the same.
                guard bodyLength >= 20, read(20) else { return finish("packet block cut short at offset \(blockStart)") }
                let captured = Int(u32(12, big: bigEndian))
                let padded = (captured + 3) / 4 * 4
                guard padded <= bodyLength - 20 else { return finish("captured length \(captured) runs past its block at offset \(blockStart)") }
                guard skip(padded) else { return finish("packet block cut short at offset \(blockStart)") }
                let optionsLength = bodyLength - 20 - padded
                guard optionsLength <= Pcapng.maximumBlockLength, read(optionsLength) else {
                    return finish("options cut short at offset \(blockStart)")
                }
                let comments = options()
                guard read(4) else { return finish("block at offset \(blockStart) cut short") }
                return comments
            case Pcapng.simplePacketType:
                guard skip(bodyLength + 4) else { return finish("simple packet block cut short at offset \(blockStart)") }
                return []
            default:
                guard skip(bodyLength - bodyRead + 4) else { return finish("block cut short at offset \(blockStart)") }
            }
        }
        return nil
    }

    func finish(_ why: String?) -> [String]? {
        done = true
        failure = why
        return nil
    }

    /// Reads `count` bytes into `buffer` from `at` on (the buffer grows to hold them).
    func read(_ count: Int, at: Int = 0) -> Bool {
        if buffer.count < at + count { buffer += [UInt8](repeating: 0, count: at + count - buffer.count) }
        lastRead = count
        guard count > 0 else { return true }
        let got = buffer.withUnsafeMutableBytes { fread($0.baseAddress! + at, 1, count, file) }
        offset += got
        return got == count
    }

    func skip(_ count: Int) -> Bool {
        guard count > 0 else { return count == 0 }
        guard fseeko(file, off_t(count), SEEK_CUR) == 0 else { return false }
        offset += count
        // A seek past the end succeeds: what follows tells (the next read fails).
        return true
    }

    /// The comments among the options just read (`buffer[0..<lastRead]`).
    func options() -> [String] {
        var comments: [String] = []
        var o = 0
        let count = lastRead
        while o + 4 <= count {
            let code = u16(o), length = Int(u16(o + 2))
            if code == Pcapng.optionEnd || o + 4 + length > count { break }
            if code == Pcapng.optionComment { comments.append(String(decoding: buffer[(o + 4)..<(o + 4 + length)], as: UTF8.self)) }
            o += 4 + (length + 3) / 4 * 4
        }
        return comments
    }

    func u16(_ o: Int) -> UInt16 {
        let v = UInt16(buffer[o]) | UInt16(buffer[o + 1]) << 8
        return bigEndian ? v.byteSwapped : v
    }

    func u32(_ o: Int, big: Bool) -> UInt32 {
        let v = UInt32(buffer[o]) | UInt32(buffer[o + 1]) << 8 | UInt32(buffer[o + 2]) << 16 | UInt32(buffer[o + 3]) << 24
        return big ? v.byteSwapped : v
    }
}
