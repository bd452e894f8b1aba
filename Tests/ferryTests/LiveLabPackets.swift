import FerryCapture
import FerryLab
import FerryWire
import Foundation
import Testing

// What the live tests that look at packets use besides the lab: per-packet checks tallied,
// tcpdump on an interface of the lab, reading the fields of a captured frame, and hand-made
// tunnel packets sent from inside a namespace.

/// Per-packet checks gathered by what they check, so that a wrong field is one issue naming the
/// packets, not one issue per packet.
struct IssueTally {
    private(set) var failures: [(check: String, examples: [String], count: Int)] = []

    mutating func check(_ ok: Bool, _ name: String, _ example: @autoclosure () -> String) {
        guard !ok else { return }
        if let i = failures.firstIndex(where: { $0.check == name }) {
            failures[i].count += 1
            if failures[i].examples.count < 3 { failures[i].examples.append(example()) }
        } else {
            failures.append((name, [example()], 1))
        }
    }

    func expectNone(_ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        for f in failures {
            Issue.record(Comment(rawValue: "\(what): \(f.check) wrong in \(f.count) packets, e.g. \(f.examples.joined(separator: "; "))"),
                         sourceLocation: sourceLocation)
        }
    }
}

// MARK: - tcpdump

/// A tcpdump writing every frame on one interface of one namespace to a file, packet-buffered
/// (`-U`) and as root (`-Z root`, or Debian's tcpdump drops to a user that cannot write there).
/// The snapshot length fits any frame of these labs (no offloads: at most 1514 bytes) while
/// keeping the ring's slots small, and the ring is large: with `-s 0` each slot of the
/// immediate-mode ring is 256 KiB, a 2 MiB ring holds eight frames, and a TCP burst overruns it.
final class Tcpdump {
    static let snapshotLength = 16384

    let process: Process
    let file: String
    let log: String

    init(_ live: LiveLab, _ ns: String, interface: String, file: String, direction: String? = nil,
         filter: String? = nil) throws {
        self.file = file
        log = file + ".log"
        var args = ["tcpdump", "-i", interface, "-n", "-U", "--immediate-mode", "-s", "\(Self.snapshotLength)",
                    "-B", "32768", "-Z", "root", "-w", file]
        if let direction { args += ["-Q", direction] }
        if let filter { args += filter.split(separator: " ").map(String.init) }
        process = try live.lab.spawn(ns, args, log: log)
        let listening = Lab.waitUntil(timeout: 10, interval: 0.05) {
            !process.isRunning || ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("listening on")
        }
        guard listening, process.isRunning else {
            throw UnexpectedOutput("tcpdump on \(ns) \(interface) did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }

    /// Stops the capture (SIGINT, bounded) and returns its frames; throws if the kernel dropped
    /// any or a frame was cut short, since the tests compare captures frame by frame.
    func stop() throws -> [OwnedFrame] {
        Lab.stop(process, timeout: 5)
        let frames = try PcapFileReader(path: file).readAll()
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").first(where: { $0.contains("dropped by kernel") }) else {
            throw UnexpectedOutput("tcpdump (\(file)) did not report its counters on SIGINT: \(text)")
        }
        guard line.hasPrefix("0 ") else { throw UnexpectedOutput("tcpdump (\(file)) lost frames: \(text)") }
        if let cut = frames.first(where: { $0.capturedLength < $0.originalLength }) {
            throw UnexpectedOutput("tcpdump (\(file)) cut a frame of \(cut.originalLength) bytes to \(cut.capturedLength)")
        }
        return frames
    }
}

// MARK: - Frames

/// Reading the frames the tests look at, without assuming what is in them.
enum FrameFields {
    static func mac(_ bytes: [UInt8], at offset: Int) -> String {
        guard bytes.count >= offset + 6 else { return "" }
        return bytes[offset..<(offset + 6)].map { String(format: "%02x", $0) }.joined(separator: ":")
    }

    static func etherType(_ bytes: [UInt8]) -> UInt16 {
        bytes.count >= 14 ? UInt16(bytes[12]) << 8 | UInt16(bytes[13]) : 0
    }

    /// The IPv4 header's offset and protocol, when the frame is untagged IPv4.
    static func ipv4(_ bytes: [UInt8]) -> (offset: Int, proto: UInt8, headerLength: Int)? {
        guard etherType(bytes) == EtherType.ipv4, bytes.count >= 34, bytes[14] >> 4 == 4 else { return nil }
        return (14, bytes[23], Int(bytes[14] & 0x0F) * 4)
    }

    static func ipv4Address(_ bytes: [UInt8], at offset: Int) -> String {
        bytes[offset..<(offset + 4)].map(String.init).joined(separator: ".")
    }

    static func u16(_ bytes: [UInt8], _ offset: Int) -> UInt16 { UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]) }

    /// A name for the inner flow a frame belongs to, as a flow hash would see it: addresses,
    /// protocol and ports for IPv4 TCP/UDP, addresses and protocol for other IPv4, else the MACs
    /// and EtherType.
    static func flowKey(_ bytes: [UInt8]) -> String {
        guard let ip = ipv4(bytes) else {
            return "eth \(mac(bytes, at: 6))>\(mac(bytes, at: 0)) type \(String(etherType(bytes), radix: 16))"
        }
        let source = ipv4Address(bytes, at: ip.offset + 12), destination = ipv4Address(bytes, at: ip.offset + 16)
        let l4 = ip.offset + ip.headerLength
        if ip.proto == IPProtocol.tcp || ip.proto == IPProtocol.udp, bytes.count >= l4 + 4 {
            return "ip \(ip.proto) \(source):\(u16(bytes, l4))>\(destination):\(u16(bytes, l4 + 2))"
        }
        return "ip \(ip.proto) \(source)>\(destination)"
    }

    /// A one-line account of a frame for failure messages.
    static func describe(_ bytes: [UInt8]) -> String {
        "\(bytes.count) bytes \(flowKey(bytes)) \(mac(bytes, at: 6))>\(mac(bytes, at: 0))"
    }
}

/// Hand-made tunnel packets for the bad-input tests: the outer headers are written here, byte by
/// byte where they are meant to be wrong, and sent from the intruder host with a raw socket.
enum HandMadePacket {
    /// A frame nobody else sends: broadcast, from `02:ba:d0:00:00:NN`, EtherType 0x88b5 (IEEE
    /// local experimental), with a text naming it. If Ferry ever delivers it, the TAP shows it.
    static func markedFrame(_ marker: UInt8) -> [UInt8] {
        var frame = [UInt8](repeating: 0xff, count: 6) + [0x02, 0xba, 0xd0, 0x00, 0x00, marker] + [0x88, 0xb5]
        frame += Array("ferry bad input \(marker)".utf8)
        while frame.count < 60 { frame.append(0) }
        return frame
    }

    static func markedSource(_ marker: UInt8) -> String { String(format: "02:ba:d0:00:00:%02x", marker) }

    /// VXLAN header and frame: `word0` holds the flags byte and 24 reserved bits (0x08000000 is
    /// the I bit alone), then the VNI and the last reserved byte.
    static func vxlan(word0: UInt32 = 0x0800_0000, vni: UInt32, lastByte: UInt8 = 0, inner: [UInt8]) -> [UInt8] {
        be32(word0) + be32(vni << 8 | UInt32(lastByte)) + inner
    }

    /// GRE header and frame: `flags` is the whole first 16-bit word (C R K S … version).
    static func gre(flags: UInt16, protocolType: UInt16 = EtherType.transparentEthernetBridging, key: UInt32?,
                    inner: [UInt8]) -> [UInt8] {
        be16(flags) + be16(protocolType) + (key.map(be32) ?? []) + inner
    }

    static func udp(sourcePort: UInt16, destinationPort: UInt16 = VXLAN.defaultPort, payload: [UInt8]) -> [UInt8] {
        // A zero checksum: none, which RFC 7348 allows for VXLAN over IPv4.
        be16(sourcePort) + be16(destinationPort) + be16(UInt16(8 + payload.count)) + be16(0) + payload
    }

    /// An IPv4 packet with a correct header checksum (FerryWire's writer), for IP_HDRINCL.
    static func ipv4(source: String, destination: String, protocol proto: UInt8, tos: UInt8 = 0, payload: [UInt8]) -> [UInt8] {
        var packet = [UInt8](repeating: 0, count: 20 + payload.count)
        packet.withUnsafeMutableBytes { b in
            _ = IPv4.writeHeader(to: b, at: 0, tos: tos, totalLength: 20 + payload.count, identification: 0x4242, ttl: 64,
                             protocol: proto, source: IPv4Address(source)!, destination: IPv4Address(destination)!)
        }
        packet.replaceSubrange(20..., with: payload)
        return packet
    }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
}

/// Sends hand-made packets from inside a namespace with Python's sockets: whole IPv4 packets
/// through a raw IPPROTO_RAW socket (IP_HDRINCL: any source address, any protocol), or UDP
/// payloads through an ordinary UDP socket. Each batch is sent a given number of times, paced.
struct PacketSender {
    enum Batch {
        /// A whole IPv4 packet, sent as is to `destination`.
        case raw(destination: String, packet: [UInt8], count: Int)
        /// A UDP payload from `sourcePort` of the namespace's own address.
        case udp(destination: String, port: UInt16, sourcePort: UInt16, payload: [UInt8], count: Int)
    }

    static let script = """
        import json, socket, sys, time
        spec = json.load(open(sys.argv[1]))
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        sent = 0
        for item in spec:
            data = bytes.fromhex(item["hex"])
            if item["mode"] == "udp":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("0.0.0.0", item["sport"]))
                for _ in range(item["count"]):
                    s.sendto(data, (item["dst"], item["dport"]))
                    sent += 1
                    time.sleep(0.005)
                s.close()
            else:
                for _ in range(item["count"]):
                    raw.sendto(data, (item["dst"], 0))
                    sent += 1
                    time.sleep(0.005)
        print("sent", sent)
        """

    let live: LiveLab

    /// Sends the batches from `ns`, in order; throws unless Python says it sent them all.
    func send(from ns: String, _ batches: [Batch], name: String) throws {
        let scriptPath = live.file("send-packets.py")
        if !FileManager.default.fileExists(atPath: scriptPath) {
            try Self.script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        }
        var spec: [[String: Any]] = []
        var total = 0
        for b in batches {
            switch b {
            case .raw(let destination, let packet, let count):
                spec.append(["mode": "raw", "dst": destination, "hex": hex(packet), "count": count])
                total += count
            case .udp(let destination, let port, let sourcePort, let payload, let count):
                spec.append(["mode": "udp", "dst": destination, "dport": Int(port), "sport": Int(sourcePort),
                             "hex": hex(payload), "count": count])
                total += count
            }
        }
        let specPath = live.file("send-\(name).json")
        try JSONSerialization.data(withJSONObject: spec).write(to: URL(fileURLWithPath: specPath))
        let out = try live.attempt(ns, [live.python, scriptPath, specPath], timeout: 60)
        guard out.status == 0, out.stdout.contains("sent \(total)") else {
            throw UnexpectedOutput("sending \(name) from \(ns) failed (exit \(out.status)): \(out.stdout) \(out.stderr)")
        }
    }

    func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
}
