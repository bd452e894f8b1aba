import Testing
import FerryCapture

@Suite struct OwnedFrameTests {
    @Test func originalLengthIsNeverShorterThanTheBytes() {
        let stamp = PacketTimestamp(seconds: 1, microseconds: 0)
        #expect(OwnedFrame(bytes: [1, 2, 3], timestamp: stamp).originalLength == 3)
        #expect(OwnedFrame(bytes: [1, 2, 3], timestamp: stamp, originalLength: 1).originalLength == 3)
        let cut = OwnedFrame(bytes: [1, 2, 3], timestamp: stamp, originalLength: 1_500)
        #expect(cut.originalLength == 1_500 && cut.capturedLength == 3)
    }

    @Test func aBorrowedFrameCopiesIntoAnOwnedOne() throws {
        let reader = try PcapFileReader(path: TestSupport.reference("ovs-gre.pcap"))
        let borrowed = try #require(try reader.next())
        #expect(!borrowed.isTruncated)
        let owned = borrowed.owned()
        #expect(owned.bytes.elementsEqual(borrowed.bytes))
        #expect(owned.timestamp == borrowed.timestamp)
        #expect(owned.originalLength == borrowed.originalLength)
        // The copy survives the reader moving on, which reuses the borrowed buffer.
        let first = owned.bytes
        _ = try reader.next()
        reader.close()
        #expect(owned.bytes == first)
    }
}
