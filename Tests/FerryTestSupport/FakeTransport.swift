import FerryEngine
import FerryLinux
import FerryWire
import Testing

/// One message the worker sent: where to, its bytes (the whole IP packet on the raw path,
/// the VXLAN payload from a UDP sender), and for a UDP sender's message which sender sent it
/// and its GSO segment size (nil: one datagram).
public struct SentPacket {
    public var destination: IPAddress?
    public var bytes: [UInt8]
    public var socket: Int?
    public var segmentSize: Int?
}

/// The underlay in memory, as `SocketTransport` stands in it: `incoming` is what peers have
/// sent (in the form the socket would hand it up), `sent` records each message of each send.
/// Everything a real socket may do is a switch: refuse any message (`refuse`), report an outer
/// TOS or a GRO segment size with what it receives, have UDP senders (`udpSenderCount`) that
/// refuse GSO (`refuseGSO`), have a link path (`hasLinkSender`).
public final class FakeTransport: TunnelTransport {
    public let pollDescriptor: Int32 = -1
    public var receivedForm: ReceivedForm

    // MARK: Receiving

    /// Handed up by the next receives, oldest first, as many as a batch holds.
    public var incoming: [(bytes: [UInt8], source: IPAddress, port: UInt16)] = []
    /// The outer TOS the socket reports for each message received (nil: none reported).
    public var reportedTOS: UInt8?
    /// The segment size the socket reports (UDP_GRO) for each message received: each is then
    /// datagrams of that size joined end to end (nil: not joined).
    public var groSegmentSize: Int?

    // MARK: Sending

    public var sent: [SentPacket] = []
    /// Calls of `send` and `sendUDP`.
    public var sendCalls = 0
    /// Messages offered to `send` so far, refused or not.
    public var offered = 0
    /// Given the message's number (counting every message ever offered to `send`, from 0) and
    /// its destination, a reason to refuse it, or nil to send it.
    public var refuse: (Int, IPAddress?) -> DropReason? = { _, _ in nil }

    /// UDP senders, as SocketTransport has for VXLAN with offloads (0: none, every message goes
    /// through `send`). With some, VXLAN must never go through `send`.
    public var udpSenderCount = 0
    /// Refuse GSO messages as a kernel may (EIO, EINVAL): each is sent again datagram by
    /// datagram, as SocketTransport does, and recorded so, without a segment size.
    public var refuseGSO = false
    /// GSO messages offered to `sendUDP`, refused or not.
    public private(set) var gsoOffered = 0

    /// Whether there is a link path (a packet socket), and what went through it.
    public var hasLinkSender = false
    public var linkSent: [(destination: (interfaceIndex: Int32, mac: MACAddress, etherType: UInt16)?, bytes: [UInt8])] = []

    public init(receivedForm: ReceivedForm) { self.receivedForm = receivedForm }

    public func receive(_ batch: MessageBatch) throws(LinuxError) -> Int {
        let n = min(incoming.count, batch.capacity)
        for i in 0..<n {
            let (bytes, source, port) = incoming[i]
            let buffer = batch.receiveBuffer(i)
            let length = min(bytes.count, buffer.count)
            if length > 0 { bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: length) } }
            batch.setReceived(i, length: length, source: source, port: port)
            // In the kernel's order: UDP's control message, then IP's.
            if let groSegmentSize { batch.setGROSegmentSize(i, groSegmentSize) }
            if let reportedTOS { batch.setReceivedTOS(i, reportedTOS, ipv6: source.isIPv6) }
        }
        incoming.removeFirst(n)
        batch.count = n
        return n
    }

    public func send(_ batch: MessageBatch, failed: (Int, DropReason) -> Void) -> Int {
        sendCalls += 1
        if udpSenderCount > 0, receivedForm == .vxlanPayload {
            Issue.record("with UDP senders, VXLAN must not go through the raw path")
            batch.count = 0
            return 0
        }
        var accepted = 0
        for i in 0..<batch.count {
            let message = batch.message(i)
            let ordinal = offered
            offered += 1
            if let reason = refuse(ordinal, message.destination) {
                failed(i, reason)
                continue
            }
            sent.append(SentPacket(destination: message.destination, bytes: message.bytes))
            accepted += 1
        }
        batch.count = 0
        return accepted
    }

    public func sendUDP(_ batch: MessageBatch, socket: Int, failed: (Int, UDPSendFailure) -> Void) -> Int {
        sendCalls += 1
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { scratch.deallocate() }
        for i in 0..<batch.count {
            let m = batch.message(i)
            let size = batch.segmentSize(i)
            if size != nil { gsoOffered += 1 }
            if refuseGSO, size != nil {
                batch.forEachDatagram(of: i, scratch: scratch) {
                    sent.append(SentPacket(destination: m.destination, bytes: Array($0), socket: socket))
                }
                failed(i, .resentWithoutSegmentation)
            } else {
                sent.append(SentPacket(destination: m.destination, bytes: m.bytes, socket: socket, segmentSize: size))
            }
        }
        let n = batch.count
        batch.count = 0
        return n
    }

    public func sendLink(_ batch: MessageBatch, failed: (Int, DropReason) -> Void) -> Int {
        for i in 0..<batch.count { linkSent.append((batch.linkDestination(i), batch.message(i).bytes)) }
        defer { batch.count = 0 }
        return batch.count
    }
}
