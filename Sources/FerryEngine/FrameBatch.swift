import FerryLinux
import FerryWire

/// The frames one egress step reads from the TAP: a slot each, the virtio-net header (when the
/// TAP has offloads) then the frame, and per frame its length and the peer it goes to.
final class FrameBatch {
    let capacity: Int
    let slotSize: Int
    let virtioLength: Int
    let slots: OwnedBytes
    let lengths: OwnedSlots<Int>
    /// The peer each frame goes to (-1: flood), from the forwarding table.
    let targets: OwnedSlots<Int>

    init(capacity: Int, slotSize: Int, virtioLength: Int) {
        self.capacity = capacity
        self.slotSize = slotSize
        self.virtioLength = virtioLength
        slots = OwnedBytes(count: capacity * slotSize)
        lengths = OwnedSlots(count: capacity)
        targets = OwnedSlots(count: capacity)
    }

    /// Reads up to a batch from `device`; returns how many frames it read.
    @inline(__always)
    func read<Device: FrameDevice>(from device: Device) throws(LinuxError) -> Int {
        var n = 0
        while n < capacity {
            let slot = UnsafeMutableRawBufferPointer(start: slots.base + n * slotSize, count: slotSize)
            guard case .done(let length) = try device.read(into: slot) else { break }
            lengths[n] = length - virtioLength
            n += 1
        }
        return n
    }

    /// Slot `i`: the virtio-net header, if any, then the frame.
    @inline(__always) func slot(_ i: Int) -> UnsafeMutableRawPointer { slots.base + i * slotSize }

    /// Frame `i`, as read (empty if the read was shorter than a virtio-net header).
    @inline(__always)
    func frame(_ i: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: slot(i) + virtioLength, count: max(0, lengths[i]))
    }
}
