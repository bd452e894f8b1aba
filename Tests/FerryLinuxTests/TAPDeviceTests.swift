import FerryLinux
import FerryWire
import Foundation
import Testing

/// A real TAP in a namespace the test builds: the kernel's side has an address and a static
/// neighbour, the test plays the neighbour through the TAP's descriptor (an ICMP echo request
/// in, the kernel's reply out), with and without the virtio-net header offloads bring.
@Suite struct TAPDeviceTests {
    static let tapMAC = MACAddress(0x02, 0x7A, 0, 0, 0, 0x01)
    static let peerMAC = MACAddress(0x02, 0x7A, 0, 0, 0, 0x02)
    static let tapAddress = IPv4Address(10, 250, 0, 1), peerAddress = IPv4Address(10, 250, 0, 2)

    @Test func aNameTheKernelCannotTakeIsRefusedBeforeOpening() {
        for name in ["", String(repeating: "t", count: 16)] {
            let refused = #expect(throws: LinuxError.self) { try TAPDevice(name: name) }
            #expect(refused?.errno == .invalidArgument && refused?.hint?.contains("1 to 15 characters") == true, "'\(name)'")
        }
    }

    /// Opens a TAP inside `ns`, gives the kernel's side its MAC, address and a neighbour (the
    /// test), and brings it up, IPv6 off so that nothing but the test's traffic crosses.
    func openTAP(in ns: String, offloads: UInt32 = 0) throws -> TAPDevice {
        try Linux.sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                     "net.ipv6.conf.default.disable_ipv6=1")
        let tap = try Linux.inNamespace(ns) { Handover(try TAPDevice(name: "tap%d", offloads: offloads)) }.value
        try Linux.sh("ip", "-n", ns, "link", "set", tap.name, "address", Self.tapMAC.description)
        try Linux.sh("ip", "-n", ns, "addr", "add", "\(Self.tapAddress)/24", "dev", tap.name)
        try Linux.sh("ip", "-n", ns, "neigh", "add", "\(Self.peerAddress)", "lladdr", Self.peerMAC.description, "dev", tap.name)
        try Linux.sh("ip", "-n", ns, "link", "set", tap.name, "up")
        return tap
    }

    /// Reads frames (bounded in count and time) until one satisfies `match`.
    func read(_ tap: TAPDevice, until match: ([UInt8]) -> Bool) throws -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 70_000)
        let deadline = Date().addingTimeInterval(5)
        for _ in 0..<100 where Date() < deadline {
            guard Poller.wait(fd: tap.fd, events: Int16(POLLIN), milliseconds: 200) else { continue }
            let r = try buffer.withUnsafeMutableBytes { try tap.read(into: $0) }
            if case .done(let n) = r, match(Array(buffer[0..<n])) { return Array(buffer[0..<n]) }
        }
        return nil
    }

    func echoRequest(identifier: UInt16, data: [UInt8]) -> [UInt8] {
        FrameBuilder.frame(destinationMAC: Self.tapMAC, sourceMAC: Self.peerMAC, source: .v4(Self.peerAddress),
                           destination: .v4(Self.tapAddress),
                           payload: .icmpEcho(request: true, identifier: identifier, sequence: 1, data: data))
    }

    /// The kernel's answer to `echoRequest`, as the peer would see it.
    func isReply(_ frame: [UInt8], identifier: UInt16, data: [UInt8]) -> Bool {
        guard frame.count >= 42 + data.count, frame[12] == 0x08, frame[13] == 0x00, frame[23] == IPProtocol.icmp else { return false }
        let addressed = frame.withUnsafeBytes { b in
            MACAddress(b, at: 0) == Self.peerMAC && MACAddress(b, at: 6) == Self.tapMAC
                && IPv4Address(b, at: 26) == Self.tapAddress && IPv4Address(b, at: 30) == Self.peerAddress
        }
        return addressed && frame[34] == 0 && frame[38] == UInt8(identifier >> 8) && frame[39] == UInt8(identifier & 0xFF)
            && Array(frame[42..<(42 + data.count)]) == data
    }

    /// Without offloads a frame is written and read as it is, Ethernet header first (no
    /// packet-information prefix, no virtio header).
    @Test(.enabled(if: Linux.isRoot, "a TAP in a namespace needs root"))
    func framesCrossAsTheyAre() throws {
        try Linux.withNamespace("ferrytap") { ns in
            let tap = try openTAP(in: ns)
            #expect(!tap.virtioHeader && tap.offloads == 0)
            #expect(tap.name.hasPrefix("tap"), "the kernel's name for the pattern: \(tap.name)")
            let data = bytes(56, seed: 5)
            let request = echoRequest(identifier: 0x1234, data: data)
            let written = try request.withUnsafeBytes { try tap.write($0) }
            #expect(written.value == request.count)
            let reply = try read(tap) { isReply($0, identifier: 0x1234, data: data) }
            #expect(reply != nil, "no echo reply from the kernel on \(tap.name)")
        }
    }

    /// With offloads every frame carries a 10-byte virtio-net header both ways, and the
    /// kernel keeps the richest set it takes: all that was asked, or that less USO, or
    /// checksums alone.
    @Test(.enabled(if: Linux.isRoot, "a TAP in a namespace needs root"))
    func withOffloadsEveryFrameHasAVirtioHeader() throws {
        try Linux.withNamespace("ferrytapv") { ns in
            let asked = TAPDevice.offloadChecksum | TAPDevice.offloadTSO4 | TAPDevice.offloadTSO6
                | TAPDevice.offloadUSO4 | TAPDevice.offloadUSO6
            let tap = try openTAP(in: ns, offloads: asked)
            #expect(tap.virtioHeader)
            let uso = TAPDevice.offloadUSO4 | TAPDevice.offloadUSO6
            #expect([asked, asked & ~uso, TAPDevice.offloadChecksum].contains(tap.offloads), "taken: \(tap.offloads)")
            let features = try Linux.sh("ip", "netns", "exec", ns, "ethtool", "-k", tap.name)
            let tso = tap.offloads & TAPDevice.offloadTSO4 != 0
            #expect(features.contains("tcp-segmentation-offload: \(tso ? "on" : "off")"), "\(features)")

            let data = bytes(120, seed: 6)
            let request = [UInt8](repeating: 0, count: VirtioNetHeader.length) + echoRequest(identifier: 0x4321, data: data)
            let written = try request.withUnsafeBytes { try tap.write($0) }
            #expect(written.value == request.count)
            let reply = try read(tap) { isReply(Array($0.dropFirst(VirtioNetHeader.length)), identifier: 0x4321, data: data) }
            #expect(reply != nil, "no echo reply behind a virtio-net header on \(tap.name)")
            if let reply {
                let header = reply.withUnsafeBytes { VirtioNetHeader($0) }
                #expect(!header.isGSO, "a small reply is no super-frame")
            }
        }
    }

    /// Each TAPDevice opened multi-queue on one name is one more queue of one device; a
    /// persistent TAP outlives its descriptor until its persistence is removed.
    @Test(.enabled(if: Linux.isRoot, "a TAP in a namespace needs root"))
    func queuesAndPersistence() throws {
        try Linux.withNamespace("ferrytapq") { ns in
            let queues = try Linux.inNamespace(ns) {
                Handover([try TAPDevice(name: "mq0", multiQueue: true), try TAPDevice(name: "mq0", multiQueue: true)])
            }
            let details = try Linux.sh("ip", "-d", "-n", ns, "link", "show", "mq0")
            #expect(details.contains("multi_queue") && details.contains("numqueues 2"), "\(details)")
            let single = #expect(throws: LinuxError.self) { try Linux.inNamespace(ns) { Handover(try TAPDevice(name: "mq0")) } }
            #expect(single?.errno == .invalidArgument, "a single-queue open of a multi-queue TAP")
            _ = queues

            try Linux.inNamespace(ns) { _ = try TAPDevice(name: "kept0", persistent: true) }
            #expect((try? Linux.sh("ip", "-n", ns, "link", "show", "kept0")) != nil, "a persistent TAP outlives its descriptor")
            try Linux.inNamespace(ns) { try TAPDevice(name: "kept0").removePersistence() }
            #expect((try? Linux.sh("ip", "-n", ns, "link", "show", "kept0")) == nil, "gone once no longer persistent and closed")
        }
    }
}
