import Foundation
import Testing
import FerryCapture
import FerryTestSupport

@Suite struct PcapFileWriterTests {
    /// Frames of awkward sizes (empty, shorter than an Ethernet header, jumbo, 64 KiB) and
    /// timestamps (microsecond edges, past 2038 where a signed 32-bit second overflows).
    static let sample: [OwnedFrame] = {
        let shapes: [(size: Int, seconds: Int64, micros: Int32)] = [
            (0, 1_700_000_000, 0),
            (1, 1_700_000_000, 1),
            (13, 1_700_000_000, 999_999),
            (14, 1_700_000_001, 0),
            (60, 1_700_000_001, 500_000),
            (1_514, 1_700_000_002, 123_456),
            (9_018, 2_200_000_000, 42),
            (65_535, 2_200_000_001, 7),
        ]
        return shapes.enumerated().map { index, shape in
            OwnedFrame(bytes: frameBytes(size: shape.size, seed: index),
                       timestamp: PacketTimestamp(seconds: shape.seconds, microseconds: shape.micros))
        }
    }()

    /// An Ethernet header with the local-experimental EtherType 0x88B5 (so tcpdump prints one
    /// line per frame), then a pattern that differs per frame and per offset.
    static func frameBytes(size: Int, seed: Int) -> [UInt8] {
        let header: [UInt8] = [0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xB5]
        return (0..<size).map { offset in
            offset < header.count ? header[offset] : UInt8(truncatingIfNeeded: offset &* 31 &+ seed &* 7)
        }
    }

    @Test func roundTripKeepsBytesLengthsAndTimestamps() throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/round-trip.pcap"
            let writer = try PcapFileWriter(path: path)
            for frame in Self.sample {
                writer.write(frame.bytes, timestamp: frame.timestamp)
            }
            // A frame whose capture was cut short keeps the length it had on the wire.
            let cut = OwnedFrame(bytes: Self.frameBytes(size: 100, seed: 99),
                                 timestamp: PacketTimestamp(seconds: 1_700_000_003, microseconds: 3),
                                 originalLength: 1_500)
            writer.write(cut)
            #expect(writer.framesWritten == Self.sample.count + 1)
            try writer.close()

            let read = try PcapFileReader(path: path).readAll()
            #expect(read.map(digest) == (Self.sample + [cut]).map(digest))
            #expect(read.last?.originalLength == 1_500)
            #expect(read.last?.capturedLength == 100)
        }
    }

    @Test func tsharkAndTcpdumpReadWhatWasWritten() throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/for-tools.pcap"
            let writer = try PcapFileWriter(path: path)
            for frame in Self.sample {
                writer.write(frame.bytes, timestamp: frame.timestamp, originalLength: frame.originalLength + 4)
            }
            try writer.close()

            let tshark = try TestSupport.run("tshark", ["-r", path, "-T", "fields", "-E", "separator=,",
                                                        "-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.cap_len"])
            #expect(tshark.status == 0)
            let rows = tshark.output.split(separator: "\n").map { $0.split(separator: ",").map(String.init) }
            try #require(rows.count == Self.sample.count)
            for (row, frame) in zip(rows, Self.sample) {
                // tshark prints epoch time as seconds.nanoseconds.
                let parts = row[0].split(separator: ".")
                #expect(Int64(parts[0]) == frame.timestamp.seconds)
                #expect(Int32(parts[1].prefix(6)) == frame.timestamp.microseconds)
                #expect(Int(row[1]) == frame.originalLength + 4)
                #expect(Int(row[2]) == frame.capturedLength)
            }

            let tcpdump = try TestSupport.run("tcpdump", ["-r", path, "-nn", "-tt"])
            #expect(tcpdump.status == 0)
            // One line per frame, plus indented hex dumps of payloads tcpdump cannot dissect.
            let frameLines = tcpdump.output.split(separator: "\n").filter { !($0.first?.isWhitespace ?? true) }
            #expect(frameLines.count == Self.sample.count)
        }
    }

    @Test func framesLongerThanTheSnapshotLengthAreCut() throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/snap.pcap"
            let writer = try PcapFileWriter(path: path, snapshotLength: 100)
            let long = Self.frameBytes(size: 1_514, seed: 1)
            writer.write(long, timestamp: PacketTimestamp(seconds: 1, microseconds: 0))
            try writer.close()

            let reader = try PcapFileReader(path: path)
            #expect(reader.snapshotLength == 100)
            let frames = try reader.readAll()
            try #require(frames.count == 1)
            #expect(frames[0].bytes.elementsEqual(long.prefix(100)))
            #expect(frames[0].originalLength == 1_514)
        }
    }

    @Test func flushMakesFramesVisibleBeforeClose() throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/flush.pcap"
            let writer = try PcapFileWriter(path: path)
            for frame in Self.sample.prefix(3) {
                writer.write(frame)
            }
            try writer.flush()
            #expect(try PcapFileReader(path: path).readAll().map(digest) == Self.sample.prefix(3).map(digest))

            writer.write(Self.sample[3])
            try writer.close()
            try writer.close()  // idempotent
            writer.write(Self.sample[4])  // ignored once closed
            #expect(writer.framesWritten == 4)
            #expect(try PcapFileReader(path: path).readAll().map(digest) == Self.sample.prefix(4).map(digest))
        }
    }

    @Test func releasingTheWriterFinishesTheFile() throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/deinit.pcap"
            do {
                let writer = try PcapFileWriter(path: path)
                writer.write(Self.sample[5])
            }
            #expect(try PcapFileReader(path: path).readAll().map(digest) == [digest(Self.sample[5])])
        }
    }

    @Test func missingDirectoryIsAWriteError() throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/no/such/dir/out.pcap"
            #expect {
                try PcapFileWriter(path: path)
            } throws: { error in
                guard case .write(let failedPath, let reason) = error as? CaptureError else { return false }
                return failedPath == path && reason.contains("No such file or directory")
            }
        }
    }
}
