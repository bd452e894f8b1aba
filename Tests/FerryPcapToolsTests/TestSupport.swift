import FerryCapture
import FerryWire
import Foundation

/// Fixture paths, scratch directories and a small sample of inner traffic for the pcap tools'
/// tests.
enum TestSupport {
    /// `Tests/Fixtures/reference`, found from this file's location.
    static let referenceDirectory: String = {
        let tests = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().deletingLastPathComponent().deletingLastPathComponent()
        return tests.appendingPathComponent("Fixtures/reference").path
    }()

    static func reference(_ name: String) -> String { (referenceDirectory as NSString).appendingPathComponent(name) }

    /// Runs `body` with a fresh directory that is removed afterwards, whatever happens.
    static func withScratchDirectory<R>(_ body: (String) throws -> R) throws -> R {
        let path = (NSTemporaryDirectory() as NSString).appendingPathComponent("ferry-pcaptools-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(path)
    }

    static let a = MACAddress(0x02, 0, 0, 0, 0, 0x0a), b = MACAddress(0x02, 0, 0, 0, 0, 0x0b)
    static let h1 = IPv4Address(10, 17, 0, 2), h2 = IPv4Address(10, 18, 0, 3)

    /// Five inner frames, one of each kind a container sends, and the flow each is described as.
    static let sample: [(frame: [UInt8], flow: String)] = [
        (FrameBuilder.frame(destinationMAC: .broadcast, sourceMAC: a,
                            payload: .arp(operation: ARP.request, senderIP: h1, targetIP: h2, targetMAC: .zero)),
         "arp 10.17.0.2 > 10.18.0.3"),
        (FrameBuilder.frame(destinationMAC: b, sourceMAC: a, source: .v4(h1), destination: .v4(h2),
                            payload: .icmpEcho(request: true, identifier: 1, sequence: 1, data: FrameBuilder.pattern(56))),
         "icmp 10.17.0.2 > 10.18.0.3"),
        (FrameBuilder.frame(destinationMAC: b, sourceMAC: a, source: .v4(h1), destination: .v4(h2),
                            payload: .udp(sourcePort: 5000, destinationPort: 53, data: FrameBuilder.pattern(300))),
         "udp 10.17.0.2:5000 > 10.18.0.3:53"),
        (FrameBuilder.frame(destinationMAC: b, sourceMAC: a, source: IPAddress("fd00:17::2")!, destination: IPAddress("fd00:18::3")!,
                            payload: .tcp(sourcePort: 40000, destinationPort: 80, sequence: 1, acknowledgment: 0, flags: 0x02,
                                          data: FrameBuilder.pattern(1400))),
         "tcp [fd00:17::2]:40000 > [fd00:18::3]:80"),
        (FrameBuilder.frame(destinationMAC: b, sourceMAC: a, vlan: 10, source: .v4(h1), destination: .v4(h2),
                            payload: .icmpEcho(request: false, identifier: 1, sequence: 1, data: [])),
         "vlan 10 icmp 10.17.0.2 > 10.18.0.3"),
    ]

    /// Writes `frames` to a capture at `path`, one second apart; returns them as written.
    @discardableResult
    static func write(_ frames: [[UInt8]], to path: String, snapshotLength: Int = 262_144) throws -> [OwnedFrame] {
        let writer = try PcapFileWriter(path: path, snapshotLength: snapshotLength)
        for (i, frame) in frames.enumerated() {
            writer.write(frame, timestamp: PacketTimestamp(seconds: 1_767_225_600 + Int64(i), microseconds: Int32(i)))
        }
        try writer.close()
        return try PcapFileReader(path: path).readAll()
    }

    static func frames(_ path: String) throws -> [OwnedFrame] { try PcapFileReader(path: path).readAll() }
}
