import FerryLinux
import FerryWire

/// VXLAN waiting to leave through the transport's UDP senders, where the kernel builds the
/// outer IP and UDP headers and segments GSO messages: one batch per sender (a flow always
/// uses one, so it keeps its source port), and what each message carries for the counters.
/// (The message being built, a `UDPRun` or a `GSOMessage`, is the worker's: `Worker.run`, `.gso`.)
final class UDPQueues {
    static var batchCapacity: Int { 256 }
    /// Most datagrams in one GSO send (the kernel's UDP_MAX_SEGMENTS).
    static var runLimit: Int { 64 }
    /// Pieces a batch can gather per send: 32 full GSO messages' worth (each a header and a
    /// payload per segment).
    static var gatherCapacity: Int { 32 * 2 * runLimit }

    /// Senders (0: VXLAN takes the raw path with Ferry's own outer headers).
    let senders: Int
    /// Owns the batches; the packet path borrows them through `refs` without reference counting.
    let batches: [MessageBatch]
    let refs: OwnedSlots<Unmanaged<MessageBatch>>
    /// Per sender and message: the peer, packets and outer bytes it carries, and whether the
    /// kernel refused it.
    let accounting: OwnedSlots<(peer: Int, packets: Int, bytes: Int, failed: Bool)>
    /// The VXLAN header every datagram starts with (the kernel writes IP and UDP).
    let vxlanHeader: OwnedBytes

    init(senders: Int, vni: UInt32?) {
        self.senders = senders
        batches = (0..<senders).map { _ in MessageBatch(capacity: Self.batchCapacity, gatherCapacity: Self.gatherCapacity) }
        refs = OwnedSlots(count: senders)
        for (k, b) in batches.enumerated() { refs[k] = Unmanaged.passUnretained(b) }
        accounting = OwnedSlots(count: senders * Self.batchCapacity)
        vxlanHeader = OwnedBytes(count: VXLAN.headerLength, alignment: 8)
        if let vni { _ = VXLAN.writeHeader(to: vxlanHeader.bytes, at: 0, vni: vni) }
    }

    /// Runs `body` with sender `k`'s batch, borrowed.
    @inline(__always)
    func batch<R>(_ k: Int, _ body: (MessageBatch) -> R) -> R {
        refs[k]._withUnsafeGuaranteedRef(body)
    }

    /// Sender `k`'s accounting, by message.
    @inline(__always)
    func accounts(_ k: Int) -> UnsafeMutablePointer<(peer: Int, packets: Int, bytes: Int, failed: Bool)> {
        accounting.pointer + k * Self.batchCapacity
    }

    var header: UnsafeRawBufferPointer { UnsafeRawBufferPointer(vxlanHeader.bytes) }
}

/// A run of whole frames of one size, for one peer through one sender: sent as one GSO
/// message, so that a stream of small datagrams costs the kernel one send (and the peer, with
/// UDP GRO, one receive) per run instead of per frame. A run of one is sent from the TAP's
/// buffer as it is; from the second frame on, the run is laid out in the segment area.
struct UDPRun {
    var count = 0
    /// `size`: bytes per datagram (VXLAN header and frame), the GSO size.
    var peer = 0, sender = 0, size = 0, wire = 0, start = 0
    var first = UnsafeRawBufferPointer(start: nil, count: 0)
}

/// The GSO message a super-frame's segments are being gathered into: for `peer`, with
/// `copies - 1` copies to the flood targets after it; `size` is the GSO size.
struct GSOMessage {
    var sender = 0, peer = 0, copies = 0, perPacketOverhead = 0
    var size = 0, perMessage = 0, segments = 0, bytes = 0
}

/// Where segments cut from TAP super-frames (and runs of small frames) are laid out, alive
/// until the send batch that points at them goes.
final class SegmentArea {
    let area: OwnedBytes
    @exclusivity(unchecked) var used = 0

    init(bytes: Int) { area = OwnedBytes(count: bytes) }

    @inline(__always) var base: UnsafeMutableRawPointer { area.base }
    @inline(__always) var free: Int { area.count - used }
    @inline(__always) var rest: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(rebasing: area.bytes[used...]) }
}
