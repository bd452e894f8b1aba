import FerryCapture
import Foundation
import Testing

/// pcapng written by `PcapngEncoder`, read back by libpcap (`PcapFileReader`), by tshark (an
/// independent reader: interface names and `frame.comment`) and by `PcapngBlocks`.
@Suite struct PcapngTests {
    /// Frames of the reference captures, on three named interfaces, every third with a comment.
    func sample() throws -> (bytes: [UInt8], frames: [OwnedFrame], interfaces: [Int], comments: [String?]) {
        let frames = try PcapFileReader(path: TestSupport.reference("kernel-vxlan.pcap")).readAll()
        var e = PcapngEncoder()
        e.sectionHeader(application: "ferry test")
        for name in ["inner", "outer", "drops"] {
            e.interfaceDescription(snapshotLength: 65535, name: name, description: "ferry's \(name) capture point")
        }
        var interfaces: [Int] = [], comments: [String?] = []
        for (i, f) in frames.enumerated() {
            let interface = i % 3
            // Comments of every length modulo 4, and one with a comma and UTF-8.
            let comment: String? = interface == 2 ? "drop reason=unexpected_vni peer=10.200.0.\(i) worker=\(i % 2)" + String(repeating: "x", count: i % 4)
                + (i == 2 ? ", ünïcode" : "") : nil
            f.bytes.withUnsafeBytes { e.enhancedPacket(interface: interface, timestamp: f.timestamp, captured: $0, originalLength: f.originalLength,
                                                 comment: comment) }
            interfaces.append(interface)
            comments.append(comment)
        }
        return (e.bytes, frames, interfaces, comments)
    }

    @Test func libpcapReadsEveryFrameBack() throws {
        try TestSupport.withScratchDirectory { dir in
            let (bytes, frames, _, _) = try sample()
            let path = dir + "/s.pcapng"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let read = try PcapFileReader(path: path).readAll()
            #expect(read.count == frames.count)
            for (a, b) in zip(read, frames) {
                #expect(a.bytes == b.bytes && a.timestamp == b.timestamp && a.originalLength == b.originalLength)
            }
        }
    }

    @Test func tsharkShowsInterfaceNamesAndComments() throws {
        try TestSupport.withScratchDirectory { dir in
            let (bytes, frames, interfaces, comments) = try sample()
            let path = dir + "/s.pcapng"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let t = try TestSupport.run("tshark", ["-r", path, "-T", "fields", "-E", "separator=|", "-e", "frame.interface_name",
                                                   "-e", "frame.comment", "-e", "frame.len"])
            #expect(t.status == 0)
            let rows = t.output.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map { $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
            #expect(rows.count == frames.count)
            for (i, row) in rows.enumerated() where row.count == 3 {
                #expect(row[0] == ["inner", "outer", "drops"][interfaces[i]], "\(row)")
                #expect(row[1] == (comments[i] ?? ""), "\(row)")
                #expect(Int(row[2]) == frames[i].originalLength)
            }
            // tshark's filter on the comment, as the users would write it.
            let dropped = try TestSupport.run("tshark", ["-r", path, "-Y", "frame.comment contains \"unexpected_vni\""])
            #expect(dropped.output.split(separator: "\n").count == comments.compactMap { $0 }.count)
        }
    }

    @Test func blocksReadBackWithTheirComments() throws {
        let (bytes, frames, interfaces, comments) = try sample()
        let packets = try PcapngBlocks(bytes).packets()
        #expect(packets.count == frames.count)
        for (i, p) in packets.enumerated() {
            #expect(p.interface == interfaces[i] && p.interfaceName == ["inner", "outer", "drops"][interfaces[i]])
            #expect(p.comments == (comments[i].map { [$0] } ?? []))
            #expect(Array(p.data) == frames[i].bytes && p.originalLength == frames[i].originalLength)
            #expect(p.timestamp == frames[i].timestamp)
        }
        #expect(PcapngBlocks.isPcapng(bytes) && !PcapngBlocks.isPcapng([0xD4, 0xC3, 0xB2, 0xA1]))
    }

    @Test func aBigEndianSectionWithNanosecondsReads() throws {
        // Written by hand as a big-endian host would: SHB, IDB with if_tsresol 9, one EPB.
        func be32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
        func be16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
        var f: [UInt8] = be32(0x0A0D_0D0A) + be32(28) + be32(0x1A2B_3C4D) + be16(1) + be16(0) + [UInt8](repeating: 0xFF, count: 8) + be32(28)
        f += be32(1) + be32(32) + be16(1) + be16(0) + be32(0) + be16(9) + be16(1) + [9, 0, 0, 0] + be16(0) + be16(0) + be32(32)
        let ns: UInt64 = 1_700_000_000_123_456_789
        f += be32(6) + be32(36) + be32(0) + be32(UInt32(ns >> 32)) + be32(UInt32(truncatingIfNeeded: ns)) + be32(3) + be32(60) + [1, 2, 3, 0] + be32(36)
        let p = try #require(try PcapngBlocks(f).packets().first)
        #expect(p.timestamp == PacketTimestamp(seconds: 1_700_000_000, microseconds: 123_456))
        #expect(Array(p.data) == [1, 2, 3] && p.originalLength == 60)
    }

    @Test func damagedFilesAreErrorsNotTraps() throws {
        let (bytes, _, _, _) = try sample()
        // Cut anywhere: every packet before the cut, then an error (or the end on a block boundary).
        for cut in stride(from: 0, to: bytes.count, by: 7) {
            var it = PcapngBlocks(Array(bytes[..<cut])).makeIterator()
            while it.next() != nil {}
            if cut > 0, cut < 28 { #expect(it.failure != nil, "cut at \(cut)") }
        }
        // A length past the file, and one claiming a gigabyte.
        var long = bytes
        long[4] = 0xF0
        #expect(throws: PcapngBlocks.ReadError.self) { try PcapngBlocks(long).packets() }
        var huge = bytes
        huge.replaceSubrange(bytes.count - 4..<bytes.count, with: [0, 0, 0, 0x40])
        #expect(throws: PcapngBlocks.ReadError.self) { try PcapngBlocks(huge).packets() }
        #expect(throws: PcapngBlocks.ReadError.notPcapng) { try PcapngBlocks([0xD4, 0xC3, 0xB2, 0xA1] + [UInt8](repeating: 0, count: 20)).packets() }
    }
}
