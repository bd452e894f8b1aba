// In-memory ports for driving the engine's steps without a TAP or a socket, shared by the
// micro-benchmarks (FerryBenchmarks) and the instruction counts (ferry-instructions). They do
// what the kernel would do for the engine and nothing more: a read copies a prepared frame into
// the engine's buffer, a receive copies prepared datagrams (and their addresses and control
// messages) into the batch's buffers, and writes and sends only count. Nothing here allocates
// or takes a reference per step: prepared bytes live in raw memory, and the mutable state is
// not checked for exclusivity at run time (one thread drives a fake).

import FerryEngine
import FerryLinux
import FerryWire

/// A TAP that hands out the same frame `pending` times, then would block; writes are counted.
public final class ReplayDevice: FrameDevice {
    /// Frames still to hand out.
    @exclusivity(unchecked) public var pending = 0
    /// Frames (or super-frames) written to the TAP, and their bytes (virtio header included).
    @exclusivity(unchecked) public private(set) var writtenFrames = 0
    @exclusivity(unchecked) public private(set) var writtenBytes = 0
    /// The frame, behind its virtio-net header when `virtioHeader`.
    let frame: UnsafeMutableRawBufferPointer
    public let virtioHeader: Bool

    public init(frame: [UInt8], virtioHeader: Bool = false) {
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: frame.count, alignment: 64)
        frame.withUnsafeBytes { raw.copyMemory(from: $0) }
        self.frame = raw
        self.virtioHeader = virtioHeader
    }

    deinit { frame.deallocate() }

    public var pollDescriptor: Int32 { -1 }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(LinuxError) -> IOResult<Int> {
        guard pending > 0 else { return .wouldBlock }
        pending -= 1
        precondition(frame.count <= buffer.count, "the engine's buffer is smaller than the frame")
        buffer.baseAddress!.copyMemory(from: frame.baseAddress!, byteCount: frame.count)
        return .done(frame.count)
    }

    public func write(_ frame: UnsafeRawBufferPointer) throws(LinuxError) -> IOResult<Int> {
        writtenFrames += 1
        writtenBytes += frame.count
        return .done(frame.count)
    }
}

/// A tunnel transport that "sends" by counting, and "receives" prepared messages: each receive
/// hands out up to `incoming` of them (as many as the batch holds), cycling through the list,
/// each from `source`, with the control messages a socket would add (a UDP GRO segment size,
/// the outer TOS).
public final class ReplayTransport: TunnelTransport {
    /// One prepared message: its bytes (what the socket hands up: a VXLAN payload, or an IP
    /// packet for a raw IPv4 socket), and its control messages (0 / nil: none).
    public struct Message {
        public var bytes: [UInt8]
        public var groSegmentSize: Int
        public var tos: UInt8?
        public init(_ bytes: [UInt8], groSegmentSize: Int = 0, tos: UInt8? = nil) {
            self.bytes = bytes
            self.groSegmentSize = groSegmentSize
            self.tos = tos
        }
    }

    struct Prepared {
        var bytes: UnsafeMutableRawBufferPointer
        var groSegmentSize: Int
        var tos: UInt8
        var hasTOS: Bool
    }

    /// Messages still to hand out.
    @exclusivity(unchecked) public var incoming = 0
    /// Messages sent (a GSO message counts once), on every path.
    @exclusivity(unchecked) public private(set) var sent = 0
    @exclusivity(unchecked) public var hasLinkSender = false
    public let receivedForm: ReceivedForm
    public let udpSenderCount: Int
    /// Receives ask for control messages (a VXLAN socket with UDP_GRO or IP_RECVTOS).
    public let receivesControl: Bool
    let prepared: UnsafeMutableBufferPointer<Prepared>
    let source: IPAddress
    let sourcePort: UInt16

    public init(messages: [Message], form: ReceivedForm, source: IPAddress, sourcePort: UInt16 = 40000,
                udpSenders: Int = 0, receivesControl: Bool = false) {
        precondition(!messages.isEmpty)
        prepared = .allocate(capacity: messages.count)
        for (i, m) in messages.enumerated() {
            let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: m.bytes.count, alignment: 64)
            m.bytes.withUnsafeBytes { raw.copyMemory(from: $0) }
            prepared[i] = Prepared(bytes: raw, groSegmentSize: m.groSegmentSize, tos: m.tos ?? 0, hasTOS: m.tos != nil)
        }
        receivedForm = form
        self.source = source
        self.sourcePort = sourcePort
        udpSenderCount = udpSenders
        self.receivesControl = receivesControl
    }

    /// A VXLAN socket that receives `payload` (VXLAN header and frame) each time, without
    /// control messages.
    public convenience init(payload: [UInt8], source: IPAddress, udpSenders: Int = 0) {
        self.init(messages: [Message(payload)], form: .vxlanPayload, source: source, udpSenders: udpSenders)
    }

    deinit {
        for p in prepared { p.bytes.deallocate() }
        prepared.deallocate()
    }

    public var pollDescriptor: Int32 { -1 }

    public func receive(_ batch: MessageBatch) throws(LinuxError) -> Int {
        batch.receivesControl = receivesControl
        let n = min(incoming, batch.capacity)
        var k = 0
        for i in 0..<n {
            let m = prepared[k]
            k = k + 1 == prepared.count ? 0 : k + 1
            let buffer = batch.receiveBuffer(i)
            precondition(m.bytes.count <= buffer.count, "the engine's buffer is smaller than the message")
            buffer.baseAddress!.copyMemory(from: m.bytes.baseAddress!, byteCount: m.bytes.count)
            batch.setReceived(i, length: m.bytes.count, source: source, port: sourcePort)
            if m.groSegmentSize > 0 { batch.setGROSegmentSize(i, m.groSegmentSize) }
            if m.hasTOS { batch.setReceivedTOS(i, m.tos) }
        }
        incoming -= n
        batch.count = n
        return n
    }

    public func send(_ batch: MessageBatch, failed: (Int, DropReason) -> Void) -> Int {
        let n = batch.count
        sent += n
        batch.count = 0
        return n
    }

    public func sendUDP(_ batch: MessageBatch, socket: Int, failed: (Int, UDPSendFailure) -> Void) -> Int {
        send(batch) { failed($0, .dropped($1)) }
    }

    public func sendLink(_ batch: MessageBatch, failed: (Int, DropReason) -> Void) -> Int { send(batch, failed: failed) }
}
