import Foundation
import Testing
import FerryCapture
import FerryTestSupport

@Suite struct PcapFileReaderTests {
    @Test(arguments: TestSupport.allCaptures)
    func referenceCapturesHaveTwelveTunnelFrames(name: String) throws {
        let reader = try PcapFileReader(path: TestSupport.reference(name))
        #expect(reader.linkType == .ethernet)
        #expect(reader.snapshotLength == 262_144)
        let frames = try reader.readAll()
        try #require(frames.count == 12)
        for frame in frames {
            // Outer IPv4 between the two underlay hosts, whole frames.
            #expect(frame.bytes[12] == 0x08 && frame.bytes[13] == 0x00)
            let source = Array(frame.bytes[26..<30])
            let destination = Array(frame.bytes[30..<34])
            #expect(Set([source, destination]) == Set([[10, 200, 0, 1], [10, 200, 0, 2]]))
            #expect(frame.originalLength == frame.capturedLength)
        }
        #expect(frames.map(\.timestamp) == frames.map(\.timestamp).sorted())
        #expect(try reader.next() == nil)
        #expect(try reader.next() == nil)  // and stays at the end
    }

    /// tshark is an independent reader: lengths and timestamps must agree frame by frame.
    @Test(arguments: TestSupport.allCaptures)
    func agreesWithTshark(name: String) throws {
        let path = TestSupport.reference(name)
        let frames = try PcapFileReader(path: path).readAll()
        let tshark = try TestSupport.run("tshark", ["-r", path, "-T", "fields", "-E", "separator=,",
                                                    "-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.cap_len"])
        #expect(tshark.status == 0)
        let expected = tshark.output.split(separator: "\n").map { line in
            let fields = line.split(separator: ",")
            let time = fields[0].split(separator: ".")
            return "\(fields[2])/\(fields[1]) @\(time[0]).\(time[1].prefix(6))"
        }
        #expect(frames.map { "\($0.capturedLength)/\($0.originalLength) @\($0.timestamp)" } == expected)
    }

    @Test func framesBorrowedOneAtATimeMatchTheCopies() throws {
        let path = TestSupport.reference("ovs-gre.pcap")
        let copies = try PcapFileReader(path: path).readAll()
        let reader = try PcapFileReader(path: path)
        var index = 0
        while let frame = try reader.next(), index < 100 {
            #expect(frame.capturedLength == copies[index].capturedLength)
            #expect(frame.bytes.elementsEqual(copies[index].bytes))
            #expect(frame.owned() == copies[index])
            index += 1
        }
        #expect(index == 12)
        reader.close()
        reader.close()  // idempotent
        #expect(try reader.next() == nil)
    }

    @Test func pcapngAndNanosecondPcapReadTheSame() throws {
        let original = TestSupport.reference("kernel-vxlan.pcap")
        let expected = try PcapFileReader(path: original).readAll().map(digest)
        try TestSupport.withScratchDirectory { directory in
            for format in ["pcapng", "nsecpcap"] {
                let converted = "\(directory)/converted.\(format)"
                let editcap = try TestSupport.run("editcap", ["-F", format, original, converted])
                try #require(editcap.status == 0)
                let frames = try PcapFileReader(path: converted).readAll()
                #expect(frames.map(digest) == expected, "format \(format)")
            }
        }
    }

    @Test func missingFileIsReportedAsSuch() {
        let path = "/nonexistent-ferry-dir/missing.pcap"
        #expect(throws: CaptureError.fileNotFound(path: path)) {
            try PcapFileReader(path: path)
        }
        #expect(throws: CaptureError.fileNotFound(path: "/tmp/no-such-ferry-capture.pcap")) {
            try PcapFileReader(path: "/tmp/no-such-ferry-capture.pcap")
        }
    }

    @Test func textAndEmptyFilesCannotBeOpened() throws {
        try TestSupport.withScratchDirectory { directory in
            let text = directory + "/notes.pcap"
            try "this is not a capture, just some text\n".write(toFile: text, atomically: true, encoding: .utf8)
            let empty = directory + "/empty.pcap"
            try Data().write(to: URL(fileURLWithPath: empty))
            for path in [text, empty] {
                #expect {
                    try PcapFileReader(path: path)
                } throws: { error in
                    guard case .cannotOpen(let failedPath, let reason) = error as? CaptureError else { return false }
                    return failedPath == path && !reason.isEmpty
                }
            }
        }
    }

    @Test(arguments: [LinkType.linuxCooked, .rawIP, .linuxCooked2])
    func nonEthernetCaptureIsRefusedUnlessAllowed(linkType: LinkType) throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/other.pcap"
            let writer = try PcapFileWriter(path: path, linkType: linkType)
            writer.write([0x45, 0, 0, 20], timestamp: PacketTimestamp(seconds: 1, microseconds: 2))
            try writer.close()

            #expect(throws: CaptureError.notEthernet(path: path, linkType: linkType.name)) {
                try PcapFileReader(path: path)
            }
            let reader = try PcapFileReader(path: path, requireEthernet: false)
            #expect(reader.linkType == linkType)
            #expect(try reader.readAll().count == 1)
        }
    }

    @Test func linuxCookedIsNamedAsLibpcapNamesIt() throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/any.pcap"
            try PcapFileWriter(path: path, linkType: .linuxCooked).close()
            #expect(throws: CaptureError.notEthernet(path: path, linkType: "LINUX_SLL")) {
                try PcapFileReader(path: path)
            }
        }
    }

    @Test func truncatedLastRecordIsAReadErrorAfterTheGoodFrames() throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/cut.pcap"
            let writer = try PcapFileWriter(path: path)
            for index in 0..<3 {
                writer.write([UInt8](repeating: UInt8(index), count: 100),
                             timestamp: PacketTimestamp(seconds: Int64(index), microseconds: 0))
            }
            try writer.close()
            // What a capture killed in the middle of a write leaves behind.
            let size = try #require(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
            #expect(truncate(path, off_t(size - 10)) == 0)

            let reader = try PcapFileReader(path: path)
            #expect(try reader.next()?.bytes.first == 0)
            #expect(try reader.next()?.bytes.first == 1)
            #expect {
                try reader.next()
            } throws: { error in
                guard case .read(let source, let reason) = error as? CaptureError else { return false }
                return source == path && reason.contains("truncated")
            }
        }
    }
}
