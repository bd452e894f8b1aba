import FerryLinux
import FerryWire

/// The kernel sockets: VXLAN arrives on a UDP socket, GRE on a raw IPPROTO_GRE one, and both
/// leave through a raw socket that takes Ferry's own IP headers (or, for VXLAN with offloads,
/// through UDP senders that the kernel segments). Each worker has a transport of its own.
public final class SocketTransport: TunnelTransport {
    /// nil for a worker that only sends (raw GRE sockets each get every packet, so only one
    /// worker receives GRE).
    public let receiver: DatagramSocket?
    public let sender: DatagramSocket
    public let receivedForm: ReceivedForm
    /// VXLAN senders, one per slice of the source-port range (a flow always uses one).
    public let udpSenders: [DatagramSocket]
    /// The port each UDP sender is bound to.
    let udpSenderPorts: [UInt16]
    /// GRE's link path: a packet socket to the underlay device, past the IP output path.
    public let linkSender: DatagramSocket?
    /// Whether the receiving socket joins datagrams (UDP_GRO): receives then need room for 64 KiB.
    @exclusivity(unchecked) public private(set) var receivesGRO = false
    /// Whether the receiving socket reports each datagram's outer TOS (a raw IPv4 socket hands
    /// up the IP header instead).
    @exclusivity(unchecked) public private(set) var receivesTOS = false
    /// Where a refused GSO message's datagrams are joined to be sent one by one.
    let datagramScratch: UnsafeMutableRawBufferPointer

    /// The receiving sockets for `workers` workers: for VXLAN, a SO_REUSEPORT group on the
    /// VXLAN port (the kernel keeps each outer flow, hence each inner flow, on one socket); for
    /// GRE, one raw socket for the first worker.
    public static func receivers(options: TunnelOptions, workers: Int) throws(LinuxError) -> [DatagramSocket?] {
        switch options.encapsulation {
        case .vxlan:
            return try DatagramSocket.udpGroup(local: options.local, port: options.destinationPort, count: workers)
        case .gre:
            let raw = try DatagramSocket.raw(protocol: Int32(IPProtocol.gre), local: options.local)
            return [raw] + Array(repeating: nil, count: workers - 1)
        }
    }

    /// A transport receiving on `receiver`. With `udpSenders` > 0, VXLAN leaves through that
    /// many UDP sockets bound to ports spread over the source-port range (the caller has made
    /// sure it may: `EngineConfiguration.udpSegmentationBlocker`); `sharedPorts` when other
    /// workers bind the same ports.
    /// `link`: open a packet socket for GRE's link path.
    public init(options: TunnelOptions, receiver: DatagramSocket?, udpSenders: Int = 0, sharedPorts: Bool = false,
                gro: Bool = false, link: Bool = false, socketBufferBytes: Int = 7 << 20) throws(LinuxError) {
        self.receiver = receiver
        switch options.encapsulation {
        case .vxlan: receivedForm = .vxlanPayload
        case .gre: receivedForm = options.local.isIPv6 ? .grePayload : .ipPacket
        }
        sender = try .headerIncluding(ipv6: options.local.isIPv6)
        receiver?.setBufferSizes(socketBufferBytes)
        sender.setBufferSizes(socketBufferBytes)
        var senders: [DatagramSocket] = []
        var ports: [UInt16] = []
        if udpSenders > 0 {
            // (Only the caller's check makes these apply: the TOS is fixed, as is DF.)
            guard case .fixed(let tos) = options.tos else { preconditionFailure("UDP senders need a fixed TOS") }
            let range = options.sourcePortRange
            let span = Int(range.upperBound - range.lowerBound) + 1
            let count = min(udpSenders, span)
            for k in 0..<count {
                // Slice k of the range; a port in use moves on to the next one in the slice.
                let first = Int(range.lowerBound) + span * k / count, last = Int(range.lowerBound) + span * (k + 1) / count - 1
                for port in first...max(first, last) {
                    if let s = try? DatagramSocket.udpSender(local: options.local, port: UInt16(port), ttl: options.ttl, tos: tos,
                                                             dontFragment: options.dontFragment == .set, reusePort: sharedPorts) {
                        s.setBufferSizes(socketBufferBytes)
                        senders.append(s)
                        ports.append(UInt16(port))
                        break
                    }
                }
            }
            if senders.count < count { senders = []; ports = [] }  // all or none: flows keep their slice
        }
        self.udpSenders = senders
        udpSenderPorts = ports
        datagramScratch = .allocate(byteCount: senders.isEmpty ? 0 : 1 << 16, alignment: 16)
        if link, case .gre = options.encapsulation {
            let s = try DatagramSocket.linkSender()
            s.setBufferSizes(socketBufferBytes)
            linkSender = s
        } else {
            linkSender = nil
        }
        if gro, case .vxlan = options.encapsulation { receivesGRO = receiver?.enableGRO() ?? false }
        if receivedForm != .ipPacket { receivesTOS = receiver?.enableTOSReceive() ?? false }
    }

    public var udpSenderCount: Int { udpSenders.count }

    public func udpSenderPort(_ socket: Int) -> UInt16 { udpSenderPorts[socket] }

    public var hasLinkSender: Bool { linkSender != nil }

    public func sendLink(_ batch: MessageBatch, failed: (Int, DropReason) -> Void) -> Int {
        // Past the queueing discipline, a full device queue refuses a packet (ENOBUFS) rather
        // than holding it: that is a full buffer, not a failure.
        linkSender!.send(batch) { index, errno in
            failed(index, errno == nil || errno == .noBufferSpace ? .sendBufferFull : .sendFailed)
        }
    }

    public func sendUDP(_ batch: MessageBatch, socket: Int, failed: (Int, UDPSendFailure) -> Void) -> Int {
        let sender = udpSenders[socket]
        return sender.send(batch) { index, errno in
            // Given up only if the datagrams then go: with DF set and a path MTU that shrank,
            // they would fail too, and GSO was not the problem.
            if let errno, DatagramSocket.refusesGSO(errno), batch.segmentSize(index) != nil,
               sender.sendDatagrams(of: batch, message: index, scratch: datagramScratch) {
                failed(index, .resentWithoutSegmentation)
                return
            }
            failed(index, .dropped(errno == nil ? .sendBufferFull : .sendFailed))
        }
    }

    deinit { datagramScratch.deallocate() }

    public var pollDescriptor: Int32 { receiver?.fd ?? -1 }

    public func receive(_ batch: MessageBatch) throws(LinuxError) -> Int {
        guard let receiver else { return 0 }
        batch.receivesControl = receivesGRO || receivesTOS
        return try receiver.receive(batch)
    }

    public func send(_ batch: MessageBatch, failed: (Int, DropReason) -> Void) -> Int {
        sender.send(batch) { index, errno in failed(index, errno == nil ? .sendBufferFull : .sendFailed) }
    }
}
