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
}

extension FrameDevice {
    public var virtioHeader: Bool { false }
}

extension TAPDevice: FrameDevice {
    public var pollDescriptor: Int32 { fd }
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
}

/// The kernel sockets: VXLAN arrives on a UDP socket, GRE on a raw IPPROTO_GRE one, and both
/// leave through a raw socket that takes Ferry's own IP headers.
public final class SocketTransport: TunnelTransport {
    public let receiver: DatagramSocket
    public let sender: DatagramSocket
    public let receivedForm: ReceivedForm

    public init(options: TunnelOptions, socketBufferBytes: Int = 7 << 20) throws(LinuxError) {
        switch options.encapsulation {
        case .vxlan:
            receiver = try .udp(local: options.local, port: options.destinationPort)
            receivedForm = .vxlanPayload
        case .gre:
            receiver = try .raw(protocol: Int32(IPProtocol.gre), local: options.local)
            receivedForm = options.local.isIPv6 ? .grePayload : .ipPacket
        }
        sender = try .headerIncluding(ipv6: options.local.isIPv6)
        receiver.setBufferSizes(socketBufferBytes)
        sender.setBufferSizes(socketBufferBytes)
    }

    public var pollDescriptor: Int32 { receiver.fd }

    public func receive(_ batch: MessageBatch) throws(LinuxError) -> Int { try receiver.receive(batch) }

    public func send(_ batch: MessageBatch, failed: (Int, DropReason) -> Void) -> Int {
        sender.send(batch) { index, errno in failed(index, errno == nil ? .sendBufferFull : .sendFailed) }
    }
}
