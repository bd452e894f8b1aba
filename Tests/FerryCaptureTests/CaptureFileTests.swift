import Foundation
import Testing
import FerryCapture

/// Capture files are made for their owner's eyes only and never through a symbolic link.
@Suite struct CaptureFileTests {
    static func mode(_ path: String) -> Int {
        var info = stat()
        return lstat(path, &info) == 0 ? Int(info.st_mode & 0o7777) : -1
    }

    @Test func aNewFileIsMode0600WhateverTheUmask() throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/new.pcap"
            // The umask a daemon usually runs with would leave it 0644: world-readable traffic.
            let fd = try CaptureFile.create(path: path)
            close(fd)
            #expect(Self.mode(path) == 0o600)
            // The writers go through it too.
            let other = directory + "/writer.pcap"
            try PcapFileWriter(path: other).close()
            #expect(Self.mode(other) == 0o600)
            let stream = directory + "/stream.pcap"
            _ = try PcapStreamWriter(descriptor: try CaptureFile.create(path: stream), path: stream, ownsDescriptor: true)
            #expect(Self.mode(stream) == 0o600)
        }
    }

    @Test func anExistingFileIsTruncatedAndTightenedTo0600() throws {
        try TestSupport.withScratchDirectory { directory in
            let path = directory + "/old.pcap"
            #expect(FileManager.default.createFile(atPath: path, contents: Data(repeating: 7, count: 10_000),
                                                   attributes: [.posixPermissions: 0o644]))
            #expect(Self.mode(path) == 0o644)
            let writer = try PcapStreamWriter(descriptor: try CaptureFile.create(path: path), path: path, ownsDescriptor: true)
            writer.close()
            #expect(Self.mode(path) == 0o600)
            let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue
            #expect(size == PcapStreamWriter.fileHeaderLength, "the old 10 000 bytes are gone, the header alone is left")
            #expect(try PcapFileReader(path: path).readAll().isEmpty)
        }
    }

    @Test func aSymbolicLinkIsRefusedAndWhatItPointsAtLeftAlone() throws {
        try TestSupport.withScratchDirectory { directory in
            let target = directory + "/target"
            let original = Data("not a capture".utf8)
            #expect(FileManager.default.createFile(atPath: target, contents: original, attributes: [.posixPermissions: 0o644]))
            let link = directory + "/capture.pcap"
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
            #expect(throws: CaptureError.symbolicLink(path: link)) { _ = try CaptureFile.create(path: link) }
            #expect(throws: CaptureError.symbolicLink(path: link)) { _ = try PcapFileWriter(path: link) }
            // A dangling link too: O_CREAT would otherwise create the file it names.
            let dangling = directory + "/dangling.pcap"
            try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: directory + "/elsewhere")
            #expect(throws: CaptureError.symbolicLink(path: dangling)) { _ = try CaptureFile.create(path: dangling) }
            #expect(!FileManager.default.fileExists(atPath: directory + "/elsewhere"))
            #expect(FileManager.default.contents(atPath: target) == original)
            #expect(Self.mode(target) == 0o644)
            let message = CaptureError.symbolicLink(path: link).description
            #expect(message.contains(link) && message.contains("symbolic link"))
        }
    }

    @Test func aMissingDirectoryIsAWriteErrorWithTheReason() throws {
        #expect(throws: CaptureError.write(path: "/nonexistent-ferry/x.pcap", reason: "No such file or directory")) {
            _ = try CaptureFile.create(path: "/nonexistent-ferry/x.pcap")
        }
    }
}
