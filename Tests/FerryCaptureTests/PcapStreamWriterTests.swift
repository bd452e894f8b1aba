import Foundation
import Testing
import FerryCapture

/// The pcap writer over a descriptor: what libpcap reads back, and every record accounted for
/// as written or lost when the sink fails or stalls.
@Suite struct PcapStreamWriterTests {
    @Test func libpcapReadsBackBytesLengthsAndTimestamps() throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/stream.pcap"
            let writer = try PcapStreamWriter(descriptor: try CaptureFile.create(path: path), path: path, ownsDescriptor: true,
                                              snapshotLength: 2000, bufferBytes: 0)
            // Buffer of the minimum (two records): the frames below cross several flushes.
            let frames = PcapFileWriterTests.sample.filter { $0.bytes.count <= 9_018 }
            for f in frames {
                f.bytes.withUnsafeBytes {
                    writer.append($0, seconds: f.timestamp.seconds, nanoseconds: Int(f.timestamp.microseconds) * 1000 + 999,
                                  originalLength: f.bytes.count, keepWaiting: { true })
                }
            }
            writer.close()
            #expect(writer.recordsWritten == frames.count && writer.recordsLost == 0)
            let read = try PcapFileReader(path: path).readAll()
            #expect(read.count == frames.count)
            for (r, f) in zip(read, frames) {
                #expect(r.bytes == Array(f.bytes.prefix(2000)))
                #expect(r.originalLength == f.bytes.count)
                #expect(r.timestamp == f.timestamp, "nanoseconds are cut to microseconds")
            }
        }
    }

    @Test func aDeviceThatIsFullRefusesTheCaptureAtStart() throws {
        let fd = open("/dev/full", O_WRONLY | O_CLOEXEC)
        try #require(fd >= 0)
        #expect(throws: CaptureError.write(path: "/dev/full", reason: "No space left on device")) {
            _ = try PcapStreamWriter(descriptor: fd, path: "/dev/full", ownsDescriptor: true)
        }
    }

    /// A pipe nobody reads: once it is full the writer waits, asking `keepWaiting`, and what
    /// it could not write when told to stop is counted lost, not hidden.
    @Test func aStalledPipeLosesRecordsCountedWhenToldToStop() throws {
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { close(ends[0]) }
        let writer = try PcapStreamWriter(descriptor: ends[1], path: "pipe", ownsDescriptor: true, snapshotLength: 1500,
                                          bufferBytes: 16384)
        let frame = [UInt8](repeating: 0x5A, count: 1000)
        var asked = 0
        // 200 records of 1016 bytes: far more than the pipe's 64 KiB holds.
        for _ in 0..<200 {
            frame.withUnsafeBytes {
                writer.append($0, seconds: 1, nanoseconds: 0, originalLength: 1000, keepWaiting: { asked += 1; return asked < 3 })
            }
        }
        writer.close()
        #expect(asked >= 3, "the writer asked whether to go on waiting")
        #expect(writer.recordsWritten + writer.recordsLost == 200)
        #expect(writer.recordsLost > 0 && writer.recordsWritten > 0)
        #expect(writer.failureReason == "the reader took nothing")
    }
}
