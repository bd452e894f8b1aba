#if canImport(Glibc)
import Glibc
#endif
import Testing
import FerryCapture

@Suite struct PacketTimestampTests {
    @Test func microsecondsAreCarriedIntoSeconds() {
        #expect(PacketTimestamp(seconds: 10, microseconds: 1_500_000) == PacketTimestamp(seconds: 11, microseconds: 500_000))
        #expect(PacketTimestamp(seconds: 10, microseconds: -1) == PacketTimestamp(seconds: 9, microseconds: 999_999))
        #expect(PacketTimestamp(seconds: 10, microseconds: -1_000_000) == PacketTimestamp(seconds: 9, microseconds: 0))
        let carried = PacketTimestamp(seconds: 0, microseconds: 2_000_001)
        #expect(carried.seconds == 2 && carried.microseconds == 1)
    }

    @Test func orderIsChronological() {
        let times = [
            PacketTimestamp(seconds: 2, microseconds: 0),
            PacketTimestamp(seconds: 1, microseconds: 999_999),
            PacketTimestamp(seconds: 1, microseconds: 5),
        ]
        #expect(times.sorted() == times.reversed())
    }

    @Test func descriptionPadsMicroseconds() {
        #expect("\(PacketTimestamp(seconds: 1_700_000_000, microseconds: 42))" == "1700000000.000042")
        #expect("\(PacketTimestamp(seconds: 3, microseconds: 999_999))" == "3.999999")
    }

    @Test func nowIsWallClockTime() {
        let before = Int64(time(nil))
        let now = PacketTimestamp.now()
        let after = Int64(time(nil))
        #expect(now.seconds >= before && now.seconds <= after)
        #expect((0..<1_000_000).contains(now.microseconds))
    }

    @Test func writtenTimestampsAreNormalisedInTheFile() throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/carry.pcap"
            let writer = try PcapFileWriter(path: path)
            writer.write([1, 2, 3], timestamp: PacketTimestamp(seconds: 100, microseconds: 1_250_000))
            try writer.close()
            let frames = try PcapFileReader(path: path).readAll()
            #expect(frames.map(\.timestamp) == [PacketTimestamp(seconds: 101, microseconds: 250_000)])
        }
    }
}
