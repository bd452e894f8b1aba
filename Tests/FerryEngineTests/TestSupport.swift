// The worker over in-memory ports (FerryTestSupport's fake TAP and fake tunnel
// transport), an injectable clock, and builders for what a local container and a remote peer
// send. Nothing here needs root, a socket or a sleep: every test drives `egressStep()` and
// `ingressStep()` by hand.

import FerryEngine
import FerryLinux
import FerryTestSupport
import FerryWire
import Synchronization
import Testing

// MARK: - Addresses

let local4 = IPAddress.v4(IPv4Address(10, 99, 0, 1))
let peer4a = IPAddress.v4(IPv4Address(10, 99, 0, 2))
let peer4b = IPAddress.v4(IPv4Address(10, 99, 0, 3))
/// Speaks the tunnel but is no configured peer.
let stranger4 = IPAddress.v4(IPv4Address(10, 99, 0, 9))

let local6 = IPAddress.v6(IPv6Address("fd00:99::1")!)
let peer6a = IPAddress.v6(IPv6Address("fd00:99::2")!)
let peer6b = IPAddress.v6(IPv6Address("fd00:99::3")!)
let stranger6 = IPAddress.v6(IPv6Address("fd00:99::9")!)

/// The TAP's own MAC.
let tapMAC = MACAddress(0x02, 0xFE, 0, 0, 0, 0x01)
/// A container on the local bridge.
let localMAC = MACAddress(0x02, 0x11, 0, 0, 0, 0x01)
/// A container behind a peer ("M" in the tests).
let remoteMAC = MACAddress(0x02, 0x22, 0, 0, 0, 0x02)
let otherRemoteMAC = MACAddress(0x02, 0x22, 0, 0, 0, 0x03)

/// Container addresses: the local bridge's subnet and a remote host's.
let localContainer4 = IPAddress.v4(IPv4Address(10, 17, 0, 2))
let remoteContainer4 = IPAddress.v4(IPv4Address(10, 18, 0, 3))
let localContainer6 = IPAddress.v6(IPv6Address("fd17::2")!)
let remoteContainer6 = IPAddress.v6(IPv6Address("fd18::3")!)

// MARK: - Variants

/// One way of building the tunnel: encapsulation and underlay family.
struct Variant: Sendable, CustomTestStringConvertible {
    var name: String
    var encapsulation: Encapsulation
    var ipv6: Bool

    static let vxlan4 = Variant(name: "VXLAN/IPv4 vni 42", encapsulation: .vxlan(vni: 42), ipv6: false)
    static let gre4 = Variant(name: "GRE/IPv4 key 42", encapsulation: .gre(GREOptions(key: 42)), ipv6: false)
    static let vxlan6 = Variant(name: "VXLAN/IPv6 vni 42", encapsulation: .vxlan(vni: 42), ipv6: true)
    static let gre6 = Variant(name: "GRE/IPv6 key 42", encapsulation: .gre(GREOptions(key: 42)), ipv6: true)

    static let ipv4: [Variant] = [.vxlan4, .gre4]
    static let all: [Variant] = [.vxlan4, .gre4, .vxlan6, .gre6]

    var testDescription: String { name }

    var local: IPAddress { ipv6 ? local6 : local4 }
    var peerA: IPAddress { ipv6 ? peer6a : peer4a }
    var peerB: IPAddress { ipv6 ? peer6b : peer4b }
    var stranger: IPAddress { ipv6 ? stranger6 : stranger4 }

    /// What the real `SocketTransport` hands up for this tunnel.
    /// What the socket strips before handing a packet up: byte counters count the whole
    /// outer IP packet, as the sender does.
    var strippedHeaderBytes: Int {
        switch receivedForm {
        case .vxlanPayload: (ipv6 ? 40 : 20) + 8
        case .grePayload: 40
        case .ipPacket: 0
        }
    }

    var receivedForm: ReceivedForm {
        switch encapsulation {
        case .vxlan: .vxlanPayload
        case .gre: ipv6 ? .grePayload : .ipPacket
        }
    }

    var tunnelID: UInt32 {
        switch encapsulation {
        case .vxlan(let vni): vni
        case .gre(let g): g.key ?? 0
        }
    }
}

// MARK: - Clock

/// Monotonic seconds that only move when a test says so.
final class TestClock: Sendable {
    private let seconds: EngineMutex<Int64>  // (a Mutex ThreadSanitizer sees)
    init(_ start: Int64 = 1_000) { seconds = EngineMutex(start) }
    var now: Int64 { seconds.withLock { $0 } }
    func advance(by s: Int64) { seconds.withLock { $0 += s } }
}

// MARK: - Harness

typealias TestWorker = Worker<FakeDevice, FakeTransport>

/// A worker over fakes, with the local host at .1 and peers .2 and .3 (or their IPv6
/// twins), underlay MTU 1500.
final class Harness {
    let variant: Variant
    let worker: TestWorker
    let device: FakeDevice
    let transport: FakeTransport
    let clock: TestClock

    /// `link`: the transport has a link path (a packet socket) for GRE.
    /// `maximumFrame`: the largest frame buffers hold (default: 64 KiB, and a virtio header).
    /// `joinsSegments`: received segments are joined for a TAP with a virtio header (`gro`).
    init(_ variant: Variant = .vxlan4, peers: [IPAddress]? = nil, virtio: Bool = false, link: Bool = false,
         maximumFrame: Int? = nil, joinsSegments: Bool = true, capture: CaptureTap? = nil,
         configure: (inout EngineConfiguration) -> Void = { _ in }) throws {
        self.variant = variant
        var c = EngineConfiguration(encapsulation: variant.encapsulation, local: variant.local,
                                    peers: peers ?? [variant.peerA, variant.peerB], underlayMTU: 1500)
        configure(&c)
        var limits = DataPathLimits(configuration: c, maximumFrame: maximumFrame ?? 65535 + 18 + VirtioNetHeader.length)
        limits.joinsReceivedSegments = joinsSegments
        device = FakeDevice()
        device.virtioHeader = virtio
        transport = FakeTransport(receivedForm: variant.receivedForm)
        transport.hasLinkSender = link
        let clock = TestClock()
        self.clock = clock
        worker = try Worker(configuration: c, limits: limits, device: device, transport: transport, deviceMAC: tapMAC,
                                  capture: capture, clock: { clock.now })
    }

    var configuration: EngineConfiguration { worker.configuration }

    /// Queues `frames` on the TAP and runs one egress step; returns what it read.
    @discardableResult
    func egress(_ frames: [[UInt8]]) throws -> Int {
        device.pending += frames
        return try worker.egressStep()
    }

    @discardableResult
    func egress(_ frame: [UInt8]) throws -> Int { try egress([frame]) }

    /// Queues raw transport payloads and runs one ingress step; returns what it received.
    @discardableResult
    func ingress(_ packets: [(bytes: [UInt8], source: IPAddress)]) throws -> Int {
        transport.incoming += packets.map { ($0.bytes, $0.source, UInt16(49152)) }
        return try worker.ingressStep()
    }

    /// A peer sends `inner` through the tunnel; one ingress step.
    @discardableResult
    func receive(_ inner: [UInt8], from peer: IPAddress) throws -> Int {
        try ingress([(tunnelPacket(inner, from: peer), peer)])
    }

    /// What `peer` sends for `inner`, in the form this transport hands up, with this tunnel's
    /// encapsulation unless told otherwise.
    func tunnelPacket(_ inner: [UInt8], from peer: IPAddress, encapsulation: Encapsulation? = nil) -> [UInt8] {
        peerPacket(inner, from: peer, to: variant.local,
                   encapsulation: encapsulation ?? variant.encapsulation, form: variant.receivedForm)
    }

    var statistics: Statistics { worker.state.statistics() }
    func counter(_ c: Counter) -> UInt64 { statistics.counter(c) }
    func drops(_ r: DropReason) -> UInt64 { statistics.drops(r) }

    func peerStatistics(_ address: IPAddress) -> Statistics.PeerStatistics? {
        statistics.peers.first { $0.address == address.description }
    }

    /// Destinations of what was sent, oldest first.
    var sentTo: [IPAddress?] { transport.sent.map(\.destination) }

    func entry(for mac: MACAddress) -> FDBEntry? {
        worker.state.forwardingEntries().first { $0.mac == mac.description }
    }
}

// MARK: - Packet builders

/// The outer headers a peer puts in front of `inner`, as `form` says (the UDP payload for
/// VXLAN, the whole IP packet for GRE over IPv4, the GRE header on for GRE over IPv6).
func peerPacket(_ inner: [UInt8], from peer: IPAddress, to local: IPAddress, encapsulation: Encapsulation,
                  form: ReceivedForm) -> [UInt8] {
    let options = try! TunnelOptions(encapsulation: encapsulation, local: peer, remote: local)
    let template = EncapsulationTemplate(options)
    let templateForm: EncapsulationTemplate.Form = form == .ipPacket ? .ipPacket : .tunnelHeader
    var header = [UInt8](repeating: 0, count: 128)
    let n = header.withUnsafeMutableBytes { h in
        inner.withUnsafeBytes { template.writeHeaders(templateForm, to: h.baseAddress!, inner: $0) }
    }
    return Array(header[0..<n]) + inner
}

/// A UDP frame from `sourceMAC` to `destinationMAC`, `length` bytes long in all (at least 42
/// over IPv4, 62 over IPv6). Frames of one flow share addresses and ports.
func udpFrame(to destinationMAC: MACAddress = .broadcast, from sourceMAC: MACAddress = localMAC,
              length: Int = 100, ipv6: Bool = false, sourcePort: UInt16 = 40000, dontFragment: Bool = true,
              tos: UInt8 = 0, source: IPAddress? = nil, destination: IPAddress? = nil, seed: UInt8 = 0) -> [UInt8] {
    let overhead = 14 + (ipv6 ? 40 : 20) + 8
    precondition(length >= overhead)
    return FrameBuilder.frame(destinationMAC: destinationMAC, sourceMAC: sourceMAC,
                              source: source ?? (ipv6 ? localContainer6 : localContainer4),
                              destination: destination ?? (ipv6 ? remoteContainer6 : remoteContainer4),
                              tos: tos, dontFragment: dontFragment,
                              payload: .udp(sourcePort: sourcePort, destinationPort: 5201,
                                            data: FrameBuilder.pattern(length - overhead, seed: seed)),
                              pad: false)
}

/// A TCP frame, `length` bytes long in all.
func tcpFrame(to destinationMAC: MACAddress = remoteMAC, from sourceMAC: MACAddress = localMAC,
              length: Int, dontFragment: Bool = true) -> [UInt8] {
    let overhead = 14 + 20 + 20
    return FrameBuilder.frame(destinationMAC: destinationMAC, sourceMAC: sourceMAC,
                              source: localContainer4, destination: remoteContainer4, dontFragment: dontFragment,
                              payload: .tcp(sourcePort: 40001, destinationPort: 80, sequence: 1, acknowledgment: 0,
                                            flags: 0x18, data: FrameBuilder.pattern(length - overhead)),
                              pad: false)
}

/// An ARP request, as a container on `sourceMAC`'s side asks who has 10.18.0.3.
func arpRequest(from sourceMAC: MACAddress) -> [UInt8] {
    FrameBuilder.frame(destinationMAC: .broadcast, sourceMAC: sourceMAC,
                       payload: .arp(operation: 1, senderIP: IPv4Address(10, 18, 0, 7),
                                     targetIP: IPv4Address(10, 17, 0, 2), targetMAC: .zero))
}

/// A small frame a remote container sends, from `sourceMAC`, to the local container.
func remoteFrame(from sourceMAC: MACAddress = remoteMAC, to destinationMAC: MACAddress = localMAC,
                 seed: UInt8 = 0) -> [UInt8] {
    udpFrame(to: destinationMAC, from: sourceMAC, length: 120, source: remoteContainer4,
             destination: localContainer4, seed: seed)
}

/// A locally administered unicast MAC numbered `n`.
func numberedMAC(_ n: Int) -> MACAddress {
    MACAddress(0x02, 0x33, 0, UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8),
               UInt8(truncatingIfNeeded: n))
}

func decapsulate(ipPacket bytes: [UInt8], policy: DecapsulationPolicy = DecapsulationPolicy()) -> DecapsulationResult {
    bytes.withUnsafeBytes { Decapsulator(policy: policy).decapsulate(ipPacket: $0) }
}

/// True when `bytes` sum (with `initial`) to 0xFFFF: a stored checksum verifies.
func checksumVerifies(_ bytes: ArraySlice<UInt8>, initial: UInt16 = 0) -> Bool {
    Array(bytes).withUnsafeBytes { InternetChecksum.isValid($0, initial: initial) }
}

func u16(_ bytes: [UInt8], _ offset: Int) -> UInt16 { UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]) }

func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
    UInt32(u16(bytes, offset)) << 16 | UInt32(u16(bytes, offset + 2))
}

func ipv4(_ bytes: [UInt8], _ offset: Int) -> IPv4Address {
    IPv4Address(bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3])
}

func ipv6(_ bytes: [UInt8], _ offset: Int) -> IPv6Address {
    bytes.withUnsafeBytes { IPv6Address($0, at: offset) }
}

func mac(_ bytes: [UInt8], _ offset: Int) -> MACAddress {
    bytes.withUnsafeBytes { MACAddress($0, at: offset) }
}
