import FerryLinux
import FerryWire

/// The packets one ingress step receives: a buffer each, with headroom in front where a
/// virtio-net header can be written before the inner frame without moving it.
final class ReceiveBatch {
    /// Bytes kept free in front of each received packet.
    static var headroom: Int { 16 }
    let batch: MessageBatch
    let buffers: OwnedBytes
    let slotSize: Int

    init(capacity: Int, slotSize: Int) {
        self.slotSize = slotSize
        batch = MessageBatch(capacity: capacity)
        buffers = OwnedBytes(count: capacity * slotSize)
        for i in 0..<capacity {
            batch.setReceiveBuffer(i, UnsafeMutableRawBufferPointer(start: buffers.base + i * slotSize + Self.headroom,
                                                                    count: slotSize - Self.headroom))
        }
    }

    /// Receives a batch from `transport`; returns how many messages arrived.
    @inline(__always)
    func receive<Transport: TunnelTransport>(from transport: Transport) throws(LinuxError) -> Int {
        try transport.receive(batch)
    }

    /// Message `i` as received, `length` bytes.
    @inline(__always)
    func message(_ i: Int, length: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: buffers.base + (i &* slotSize &+ Self.headroom), count: length)
    }
}

/// The inner source MACs one ingress step saw, with the peer each came from, learned into the
/// forwarding table under one lock at the end of the step.
final class LearnBuffer {
    let capacity: Int
    let macs: OwnedSlots<MACAddress>
    let peers: OwnedSlots<Int>
    /// The address each MAC came from (accept-any mode): a slot given to another peer
    /// meanwhile is not taught MACs that were the last one's.
    let sources: OwnedSlots<IPAddress>
    @exclusivity(unchecked) var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        macs = OwnedSlots(count: capacity)
        peers = OwnedSlots(count: capacity)
        sources = OwnedSlots(count: capacity)
    }

    /// Notes `mac` from `peer`; `source`, the peer's address, matters in accept-any mode only.
    @inline(__always)
    func append(_ mac: MACAddress, peer: Int, source: IPAddress?) {
        let n = count
        guard n < capacity else { return }
        macs[n] = mac
        if let source { sources[n] = source }
        peers[n] = peer
        count = n &+ 1
    }
}
