@testable import FerryCapture
import Foundation
import Testing

/// `PcapngCommentReader`: the comments of a pcapng file block by block, in the order libpcap
/// numbers the packets, in memory bounded by the options (not the packets, not the file).
@Suite struct PcapngCommentReaderTests {
    func withFile<R>(_ bytes: [UInt8], _ body: (String) throws -> R) throws -> R {
        let path = NSTemporaryDirectory() + "ferry-comments-\(UUID().uuidString).pcapng"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(path)
    }

    @Test func commentsComeInLibpcapsOrderWithBoundedMemory() throws {
        var e = PcapngEncoder()
        e.sectionHeader(application: "ferry test")
        e.interfaceDescription(snapshotLength: 262_144, name: "inner")
        e.interfaceDescription(snapshotLength: 262_144, name: "drops")
        // Large packets (64 KiB and more), every third commented; a second section in the middle.
        var expected: [[String]] = []
        for i in 0..<40 {
            if i == 20 {
                e.sectionHeader()
                e.interfaceDescription(snapshotLength: 262_144, name: "again")
            }
            let frame = [UInt8](repeating: UInt8(i), count: 65_536 + 37 * i)
            let comment: String? = i % 3 == 0 ? "drop reason=unexpected_vni n=\(i)" + String(repeating: "é", count: i % 5) : nil
            frame.withUnsafeBytes {
                e.enhancedPacket(interface: i >= 20 ? 0 : i % 2, timestamp: PacketTimestamp(seconds: Int64(i), microseconds: 0),
                                 captured: $0, originalLength: $0.count, comment: comment)
            }
            expected.append(comment.map { [$0] } ?? [])
        }
        try withFile(e.bytes) { path in
            // libpcap reads as many packets as there are lists.
            let frames = try PcapFileReader(path: path).readAll()
            #expect(frames.count == expected.count)
            let reader = try #require(PcapngCommentReader(path: path))
            var got: [[String]] = []
            var largestBuffer = 0
            while let c = reader.next() {
                got.append(c)
                largestBuffer = max(largestBuffer, reader.buffer.count)
            }
            #expect(got == expected)
            #expect(reader.failure == nil)
            // What was held: a block header and the options, never a packet.
            #expect(largestBuffer < 256, "\(largestBuffer)")
        }
    }

    @Test func aCaptureCutShortEndsTheComments() throws {
        var e = PcapngEncoder()
        e.sectionHeader()
        e.interfaceDescription(snapshotLength: 65535, name: "drops")
        for i in 0..<3 {
            [UInt8](repeating: 1, count: 100).withUnsafeBytes {
                e.enhancedPacket(interface: 0, timestamp: PacketTimestamp(seconds: 0, microseconds: 0), captured: $0,
                                 originalLength: 100, comment: "c\(i)")
            }
        }
        // Cut inside the last packet's options: two lists, then nothing (and no trap).
        try withFile(Array(e.bytes.dropLast(10))) { path in
            let reader = try #require(PcapngCommentReader(path: path))
            #expect(reader.next() == ["c0"] && reader.next() == ["c1"])
            #expect(reader.next() == nil && reader.next() == nil)
            #expect(reader.failure != nil)
        }
        // A classic pcap, or standard input: no reader.
        #expect(PcapngCommentReader(path: "-") == nil)
        try withFile([0xD4, 0xC3, 0xB2, 0xA1] + [UInt8](repeating: 0, count: 20)) { #expect(PcapngCommentReader(path: $0) == nil) }
    }
}
