import FerryLinux

/// Packets with Ferry's own outer headers waiting for one `sendmmsg`: the IP path's (a raw
/// socket) or GRE's link path's (a packet socket). Per message, a header slot that the send
/// gathers with the frame where it lies, the peer it goes to, and whether the kernel refused it.
final class SendQueue {
    static var headerSlotSize: Int { 128 }
    let batch: MessageBatch
    let headerSlots: OwnedBytes
    let peer: OwnedSlots<Int>
    let failed: OwnedSlots<Bool>
    /// Which path this queue is: sends and counters differ.
    let isLink: Bool

    init(messages: Int, isLink: Bool) {
        batch = MessageBatch(capacity: messages)
        headerSlots = OwnedBytes(count: messages * Self.headerSlotSize)
        peer = OwnedSlots(count: messages)
        failed = OwnedSlots(count: messages)
        self.isLink = isLink
    }

    @inline(__always) var isFull: Bool { batch.count == batch.capacity }

    /// Where message `m`'s outer headers go.
    @inline(__always) func headerSlot(_ m: Int) -> UnsafeMutableRawPointer { headerSlots.base + m * Self.headerSlotSize }

    /// Notes who message `m` (just appended) is for.
    @inline(__always)
    func noteAppended(_ m: Int, peer p: Int) {
        peer[m] = p
        failed[m] = false
    }
}
