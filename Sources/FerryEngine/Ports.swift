import FerryLinux
import FerryWire

/// The bridge side: Ethernet frames one at a time (a TAP, or a fake in tests).
public protocol FrameDevice: AnyObject {
    /// A descriptor that polls readable when a frame waits (-1: always try).
    var pollDescriptor: Int32 { get }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(LinuxError) -> IOResult<Int>
    func write(_ frame: UnsafeRawBufferPointer) throws(LinuxError) -> IOResult<Int>
    /// Frames read and written start with a virtio-net header (a TAP with offloads).
    var virtioHeader: Bool { get }
    /// UDP super-frames (gso_type UDP_L4) may be read and written (a TAP with USO).
    var udpSegmentation: Bool { get }
}

extension FrameDevice {
    public var virtioHeader: Bool { false }
    public var udpSegmentation: Bool { false }
}

extension TAPDevice: FrameDevice {
    public var pollDescriptor: Int32 { fd }
    public var udpSegmentation: Bool { offloads & TAPDevice.offloadUSO4 != 0 }
}

/// What a tunnel transport's receive hands up, which says how to decapsulate it.
public enum ReceivedForm: Sendable {
    /// A UDP payload: VXLAN header, then the inner frame.
    case vxlanPayload
    /// An IP packet from its header on (a raw IPv4 socket).
    case ipPacket
    /// A GRE header on (a raw IPv6 socket).
    case grePayload
}

/// The underlay side: tunnel packets in batches (sockets, or a fake in tests). Sends carry
/// whole IP packets (`EncapsulationTemplate.Form.ipPacket`).
public protocol TunnelTransport: AnyObject {
    var pollDescriptor: Int32 { get }
    var receivedForm: ReceivedForm { get }
    /// Receives into the batch's buffers; returns the count (0 when nothing waits).
    func receive(_ batch: MessageBatch) throws(LinuxError) -> Int
    /// Sends the batch and empties it; calls `failed` for each message refused.
    func send(_ batch: MessageBatch, failed: (Int, DropReason) -> Void) -> Int
    /// UDP sockets that send VXLAN payloads with the kernel building IP and UDP headers, and
    /// segmenting GSO messages (0: none; everything goes through `send`).
    var udpSenderCount: Int { get }
    /// Sends a batch of VXLAN payloads (some GSO messages) from UDP sender `socket`, and empties
    /// it; calls `failed` for each message not sent as it was. A GSO message the kernel refuses
    /// whole (EIO: the route's device cannot checksum; EINVAL or EMSGSIZE on some paths) is sent
    /// again datagram by datagram, and reported as `resentWithoutSegmentation`.
    func sendUDP(_ batch: MessageBatch, socket: Int, failed: (Int, UDPSendFailure) -> Void) -> Int
    /// Whether there is a packet socket that sends whole IP packets to a next hop's MAC on a
    /// device (GRE's link path).
    var hasLinkSender: Bool { get }
    /// Sends a batch of whole IP packets, each to the sockaddr_ll its message names.
    func sendLink(_ batch: MessageBatch, failed: (Int, DropReason) -> Void) -> Int
    /// The local port UDP sender `socket` sends from (what an outer capture writes into the
    /// UDP headers it rebuilds); 0 if unknown.
    func udpSenderPort(_ socket: Int) -> UInt16
}

extension TunnelTransport {
    public var hasLinkSender: Bool { false }
    public func sendLink(_ batch: MessageBatch, failed: (Int, DropReason) -> Void) -> Int {
        preconditionFailure("this transport has no link sender")
    }
    public var udpSenderCount: Int { 0 }
    public func udpSenderPort(_ socket: Int) -> UInt16 { 0 }
    public func sendUDP(_ batch: MessageBatch, socket: Int, failed: (Int, UDPSendFailure) -> Void) -> Int {
        preconditionFailure("this transport has no UDP senders")
    }
}

/// What became of a UDP sender's message that did not go as it was.
public enum UDPSendFailure: Sendable, Equatable {
    /// Not sent, for this reason.
    case dropped(DropReason)
    /// A GSO message the kernel refused whole, sent again datagram by datagram: the kernel
    /// will not segment on this path, so the worker builds no more GSO messages.
    case resentWithoutSegmentation
}
