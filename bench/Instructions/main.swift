// ferry-instructions: runs one of the engine's per-packet steps (egress or ingress, VXLAN or
// GRE, 64 B frames or 64 KiB super-frames) a given number of times over in-memory ports, so
// that `bench/instructions` can count its instructions under callgrind. Each scenario states
// what one iteration is and how many tunnel packets it carries.
//
//   ferry-instructions list                   name, packets per iteration, what a packet is,
//                                             what an iteration is (tab-separated)
//   ferry-instructions run NAME ITERATIONS    two warm-up steps, then ITERATIONS steps; then
//                                             checks the engine's counters say each step did
//                                             what the scenario claims (exit 1 if not)
//
// Only the public API of FerryEngine, FerryLinux and FerryWire is used, and the engine is set up
// as `ferry run` sets it up (Engine.swift) with offloads on, or off where the name says "raw":
// a TAP with a virtio-net header, TSO and joined receives, VXLAN through 8 UDP senders. The
// clock is fixed, so that nothing once-a-second (table expiry) falls inside some runs only.

import FerryBenchSupport
import FerryEngine
import FerryLinux
import FerryWire
import Glibc

// MARK: - The network

let local = IPAddress.v4(IPv4Address(10, 99, 0, 1))
let peerA = IPAddress.v4(IPv4Address(10, 99, 0, 2))
let peerB = IPAddress.v4(IPv4Address(10, 99, 0, 3))
/// The TAP's own MAC.
let tapMAC = MACAddress(0x02, 0xFE, 0, 0, 0, 0x01)
/// A container on this host's bridge, and one behind peer A.
let localMAC = MACAddress(0x02, 0x11, 0, 0, 0, 0x01)
let remoteMAC = MACAddress(0x02, 0x22, 0, 0, 0, 0x02)
let localContainer = IPAddress.v4(IPv4Address(10, 17, 0, 2))
let remoteContainer = IPAddress.v4(IPv4Address(10, 18, 0, 3))

let vxlan = Encapsulation.vxlan(vni: 42)
let gre = Encapsulation.gre(GREOptions(key: 42))
/// What a super-frame is cut to: TCP payload bytes per segment (a 1454 B inner frame, which
/// fits a 1500 B underlay behind VXLAN's 50 bytes and GRE's 42).
let mss = 1400

typealias BenchWorker = Worker<ReplayDevice, ReplayTransport>

/// A worker as `Engine` builds one: two configured peers; with `offloads`, room for 64 KiB
/// super-frames and joined receives (else for a 1500 B frame), and for VXLAN 8 UDP senders.
/// `knowsRemote`: the forwarding table has the remote container's MAC behind peer A (so
/// egress is unicast).
func makeWorker(_ encapsulation: Encapsulation, offloads: Bool, device: ReplayDevice, transport: ReplayTransport,
                   knowsRemote: Bool) -> BenchWorker {
    var configuration = EngineConfiguration(encapsulation: encapsulation, local: local, peers: [peerA, peerB], underlayMTU: 1500)
    if knowsRemote { configuration.staticEntries = [(remoteMAC, peerA)] }
    let limits = DataPathLimits(configuration: configuration,
                                maximumFrame: (offloads ? 65535 : 1500) + Ethernet.headerLength + Ethernet.vlanTagLength
                                    + VirtioNetHeader.length,
                                joinsReceivedSegments: offloads)
    return try! Worker(configuration: configuration, limits: limits, device: device, transport: transport, deviceMAC: tapMAC,
                          clock: { 1_000 })
}

// MARK: - Frames

/// A 64-byte UDP frame (22 bytes of data), from `source` to `destination` container.
func smallFrame(from sourceMAC: MACAddress, _ source: IPAddress, to destinationMAC: MACAddress, _ destination: IPAddress) -> [UInt8] {
    FrameBuilder.frame(destinationMAC: destinationMAC, sourceMAC: sourceMAC, source: source, destination: destination,
                       payload: .udp(sourcePort: 40000, destinationPort: 5201, data: FrameBuilder.pattern(22)))
}

/// A TCP super-frame of `segments` × 1400 bytes of payload, as a TAP with TSO hands it over.
func superFrame(segments: Int, from sourceMAC: MACAddress, _ source: IPAddress, to destinationMAC: MACAddress,
                _ destination: IPAddress) -> (frame: [UInt8], header: VirtioNetHeader) {
    let frame = FrameBuilder.frame(destinationMAC: destinationMAC, sourceMAC: sourceMAC, source: source, destination: destination,
                                   payload: .tcp(sourcePort: 40000, destinationPort: 5201, sequence: 1, acknowledgment: 1,
                                                 flags: TCP.ack, data: FrameBuilder.pattern(segments * mss)), pad: false)
    let header = VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 54,
                                 gsoSize: UInt16(mss), checksumStart: 34, checksumOffset: 16)
    return (frame, header)
}

/// `frame` behind its virtio-net header, as a TAP with offloads hands it over.
func withVirtioHeader(_ header: VirtioNetHeader, _ frame: [UInt8]) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: VirtioNetHeader.length)
    bytes.withUnsafeMutableBytes { header.write(to: $0.baseAddress!) }
    return bytes + frame
}

/// A UDP frame from a container as a TAP with checksum offload hands it over: NEEDS_CSUM,
/// with the pseudo-header sum where the checksum goes (the engine finishes it).
func partialChecksum(_ frame: [UInt8]) -> [UInt8] {
    var frame = frame
    let pseudo = InternetChecksum.pseudoHeaderSum(source: localContainer, destination: remoteContainer, protocol: IPProtocol.udp,
                                                  length: frame.count - 34)
    frame[40] = UInt8(pseudo >> 8)
    frame[41] = UInt8(pseudo & 0xFF)
    return withVirtioHeader(VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, checksumStart: 34, checksumOffset: 6), frame)
}

/// The segments a peer's TSO super-frame of `segments` × 1400 B (to the local container) was
/// cut into, each a whole frame with its checksums.
func segments(_ segments: Int) -> [[UInt8]] {
    let (frame, header) = superFrame(segments: segments, from: remoteMAC, remoteContainer, to: localMAC, localContainer)
    let area = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
    defer { area.deallocate() }
    var pieces: [[UInt8]] = []
    frame.withUnsafeBytes { f in
        _ = try! Segmentation.segment(f, header: header, into: area) { offset, length in
            pieces.append(Array(UnsafeRawBufferPointer(rebasing: area[offset..<(offset + length)])))
        }
    }
    return pieces
}

/// What peer A's socket would have sent for `inner`, as the local socket hands it up: for VXLAN
/// the UDP payload (VXLAN header and frame), for GRE over IPv4 the IP packet (a raw socket).
func fromPeer(_ encapsulation: Encapsulation, _ inner: [UInt8]) -> [UInt8] {
    let template = EncapsulationTemplate(try! TunnelOptions(encapsulation: encapsulation, local: peerA, remote: local))
    let form: EncapsulationTemplate.Form
    if case .vxlan = encapsulation { form = .tunnelHeader } else { form = .ipPacket }
    var header = [UInt8](repeating: 0, count: 128)
    let length = inner.withUnsafeBytes { i in header.withUnsafeMutableBytes { template.writeHeaders(form, to: $0.baseAddress!, inner: i) } }
    return Array(header[0..<length]) + inner
}

// MARK: - Scenarios

struct Scenario {
    var name: String
    /// Tunnel packets per iteration (sent on egress, received on ingress).
    var packets: Int
    var packet: String
    var iteration: String
    var ingress: Bool
    /// Frames the TAP hands over per step (egress), or messages the socket hands up (ingress).
    var perStep: Int
    /// Engine counters per step, checked after the run.
    var expected: [(Counter, Int)]
    /// Transport messages sent per step (egress), or TAP writes per step (ingress).
    var outputs: Int
    var build: () -> BenchWorker
}

let scenarios: [Scenario] = [
    Scenario(
        name: "vxlan-egress-64B", packets: 64, packet: "64 B frame -> VXLAN datagram",
        iteration: "64 frames from the TAP (virtio header, NEEDS_CSUM), one flow, unicast; one GSO send of 64 via the UDP senders",
        ingress: false, perStep: 64,
        expected: [(.tapReceivedFrames, 64), (.unicastFrames, 64), (.sentPackets, 64), (.gsoSends, 1)], outputs: 1,
        build: {
            let device = ReplayDevice(frame: partialChecksum(smallFrame(from: localMAC, localContainer, to: remoteMAC, remoteContainer)),
                                      virtioHeader: true)
            return makeWorker(vxlan, offloads: true, device: device,
                                 transport: ReplayTransport(messages: [.init([0])], form: .vxlanPayload, source: peerA, udpSenders: 8),
                                 knowsRemote: true)
        }),
    Scenario(
        name: "vxlan-egress-64B-raw", packets: 64, packet: "64 B frame -> VXLAN packet",
        iteration: "64 frames from the TAP (offloads off: no virtio header), unicast; Ferry's own IP/UDP/VXLAN headers, one sendmmsg of 64 on the raw socket",
        ingress: false, perStep: 64,
        expected: [(.tapReceivedFrames, 64), (.unicastFrames, 64), (.sentPackets, 64), (.gsoSends, 0)], outputs: 64,
        build: {
            let device = ReplayDevice(frame: smallFrame(from: localMAC, localContainer, to: remoteMAC, remoteContainer))
            return makeWorker(vxlan, offloads: false, device: device,
                                 transport: ReplayTransport(messages: [.init([0])], form: .vxlanPayload, source: peerA),
                                 knowsRemote: true)
        }),
    Scenario(
        name: "gre-egress-64B", packets: 64, packet: "64 B frame -> GRE packet",
        iteration: "64 frames from the TAP (virtio header, NEEDS_CSUM), unicast; Ferry's own IP/GRE headers (key), one sendmmsg of 64 on the raw socket",
        ingress: false, perStep: 64,
        expected: [(.tapReceivedFrames, 64), (.unicastFrames, 64), (.sentPackets, 64)], outputs: 64,
        build: {
            let device = ReplayDevice(frame: partialChecksum(smallFrame(from: localMAC, localContainer, to: remoteMAC, remoteContainer)),
                                      virtioHeader: true)
            return makeWorker(gre, offloads: true, device: device,
                                 transport: ReplayTransport(messages: [.init([0])], form: .ipPacket, source: peerA),
                                 knowsRemote: true)
        }),
    Scenario(
        name: "vxlan-egress-64KiB", packets: 46, packet: "1400 B TCP segment -> VXLAN datagram",
        iteration: "one 64 KiB TCP super-frame from the TAP (TSO), segment headers written, payload gathered in place; 2 GSO sends (44 + 2) via the UDP senders",
        ingress: false, perStep: 1,
        expected: [(.tapReceivedFrames, 1), (.superFrames, 1), (.superFrameSegments, 46), (.sentPackets, 46), (.gsoSends, 2)],
        outputs: 2,
        build: {
            let (frame, header) = superFrame(segments: 46, from: localMAC, localContainer, to: remoteMAC, remoteContainer)
            let device = ReplayDevice(frame: withVirtioHeader(header, frame), virtioHeader: true)
            return makeWorker(vxlan, offloads: true, device: device,
                                 transport: ReplayTransport(messages: [.init([0])], form: .vxlanPayload, source: peerA, udpSenders: 8),
                                 knowsRemote: true)
        }),
    Scenario(
        name: "gre-egress-64KiB", packets: 46, packet: "1400 B TCP segment -> GRE packet",
        iteration: "one 64 KiB TCP super-frame from the TAP (TSO), cut into 46 segments (payload copied); Ferry's own IP/GRE headers, one sendmmsg of 46",
        ingress: false, perStep: 1,
        expected: [(.tapReceivedFrames, 1), (.superFrames, 1), (.superFrameSegments, 46), (.sentPackets, 46)], outputs: 46,
        build: {
            let (frame, header) = superFrame(segments: 46, from: localMAC, localContainer, to: remoteMAC, remoteContainer)
            let device = ReplayDevice(frame: withVirtioHeader(header, frame), virtioHeader: true)
            return makeWorker(gre, offloads: true, device: device,
                                 transport: ReplayTransport(messages: [.init([0])], form: .ipPacket, source: peerA),
                                 knowsRemote: true)
        }),
    Scenario(
        name: "vxlan-ingress-64B", packets: 64, packet: "VXLAN datagram -> 64 B frame",
        iteration: "a receive of 64 VXLAN datagrams (outer TOS reported) from a peer; each frame written to the TAP behind an empty virtio header",
        ingress: true, perStep: 64,
        expected: [(.receivedPackets, 64), (.tapWrittenFrames, 64)], outputs: 64,
        build: {
            let inner = smallFrame(from: remoteMAC, remoteContainer, to: localMAC, localContainer)
            let transport = ReplayTransport(messages: [.init(fromPeer(vxlan, inner), tos: 0)], form: .vxlanPayload, source: peerA,
                                            udpSenders: 8, receivesControl: true)
            return makeWorker(vxlan, offloads: true, device: ReplayDevice(frame: [0], virtioHeader: true), transport: transport,
                                 knowsRemote: false)
        }),
    Scenario(
        name: "gre-ingress-64B", packets: 64, packet: "GRE packet -> 64 B frame",
        iteration: "a receive of 64 GRE packets (key; raw IPv4 socket: IP header on) from a peer; each frame written to the TAP behind an empty virtio header",
        ingress: true, perStep: 64,
        expected: [(.receivedPackets, 64), (.tapWrittenFrames, 64)], outputs: 64,
        build: {
            let inner = smallFrame(from: remoteMAC, remoteContainer, to: localMAC, localContainer)
            let transport = ReplayTransport(messages: [.init(fromPeer(gre, inner))], form: .ipPacket, source: peerA)
            return makeWorker(gre, offloads: true, device: ReplayDevice(frame: [0], virtioHeader: true), transport: transport,
                                 knowsRemote: false)
        }),
    Scenario(
        name: "vxlan-ingress-64KiB", packets: 44, packet: "VXLAN datagram (1400 B TCP segment) -> joined",
        iteration: "one UDP GRO receive of 44 VXLAN datagrams (as much as 64 KiB holds) of one TCP flow, joined into one super-frame, one TAP write",
        ingress: true, perStep: 1,
        expected: [(.receivedPackets, 44), (.groReceives, 1), (.coalescedSegments, 43), (.tapWrittenFrames, 1)], outputs: 1,
        build: {
            let datagrams = segments(44).map { fromPeer(vxlan, $0) }
            let transport = ReplayTransport(messages: [.init(datagrams.flatMap { $0 }, groSegmentSize: datagrams[0].count, tos: 0)],
                                            form: .vxlanPayload, source: peerA, udpSenders: 8, receivesControl: true)
            return makeWorker(vxlan, offloads: true, device: ReplayDevice(frame: [0], virtioHeader: true), transport: transport,
                                 knowsRemote: false)
        }),
    Scenario(
        name: "gre-ingress-64KiB", packets: 44, packet: "GRE packet (1400 B TCP segment) -> joined",
        iteration: "a receive of 44 GRE packets of one TCP flow (raw IPv4 socket), joined into one super-frame, one TAP write",
        ingress: true, perStep: 44,
        expected: [(.receivedPackets, 44), (.coalescedSegments, 43), (.tapWrittenFrames, 1)], outputs: 1,
        build: {
            let transport = ReplayTransport(messages: segments(44).map { .init(fromPeer(gre, $0)) }, form: .ipPacket, source: peerA)
            return makeWorker(gre, offloads: true, device: ReplayDevice(frame: [0], virtioHeader: true), transport: transport,
                                 knowsRemote: false)
        }),
]

// MARK: - Running

/// Steps before the counted ones (the first may size buffers and learn MACs).
let warmUp = 2

@inline(never)
func runEgress(_ worker: BenchWorker, frames: Int, steps: Int) {
    let device = worker.device
    for _ in 0..<steps {
        device.pending = frames
        _ = try! worker.egressStep()
    }
}

@inline(never)
func runIngress(_ worker: BenchWorker, messages: Int, steps: Int) {
    let transport = worker.transport
    for _ in 0..<steps {
        transport.incoming = messages
        _ = try! worker.ingressStep()
    }
}

func fail(_ message: String) -> Never {
    var line = "ferry-instructions: \(message)\n"
    _ = line.withUTF8 { write(2, $0.baseAddress, $0.count) }
    exit(1)
}

/// Whether the steps did what the scenario says: every expected counter, what left through the
/// fakes, and no drop.
func check(_ s: Scenario, _ worker: BenchWorker, steps: Int) {
    let statistics = worker.state.statistics()
    var problems: [String] = []
    for (counter, perStep) in s.expected where statistics.counter(counter) != UInt64(perStep * steps) {
        problems.append("\(counter.name) \(statistics.counter(counter)), expected \(perStep * steps)")
    }
    let outputs = s.ingress ? worker.device.writtenFrames : worker.transport.sent
    if outputs != s.outputs * steps {
        problems.append("\(s.ingress ? "TAP writes" : "messages sent") \(outputs), expected \(s.outputs * steps)")
    }
    for (reason, n) in statistics.drops where n > 0 { problems.append("dropped \(n) (\(reason))") }
    if !problems.isEmpty { fail("\(s.name): \(problems.joined(separator: "; "))") }
    print("\(s.name): \(steps) steps, \(s.packets * steps) packets, counters as expected")
}

let arguments = CommandLine.arguments
switch arguments.count > 1 ? arguments[1] : "" {
case "list":
    for s in scenarios { print("\(s.name)\t\(s.packets)\t\(s.packet)\t\(s.iteration)") }
case "run" where arguments.count == 4:
    guard let s = scenarios.first(where: { $0.name == arguments[2] }) else { fail("no scenario \(arguments[2]) (see: list)") }
    guard let iterations = Int(arguments[3]), iterations >= 0 else { fail("iterations: a count, not \(arguments[3])") }
    let worker = s.build()
    if s.ingress {
        runIngress(worker, messages: s.perStep, steps: warmUp)
        runIngress(worker, messages: s.perStep, steps: iterations)
    } else {
        runEgress(worker, frames: s.perStep, steps: warmUp)
        runEgress(worker, frames: s.perStep, steps: iterations)
    }
    check(s, worker, steps: warmUp + iterations)
default:
    fail("usage: ferry-instructions list | run SCENARIO ITERATIONS")
}
