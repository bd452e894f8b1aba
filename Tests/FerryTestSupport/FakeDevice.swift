import FerryEngine
import FerryLinux
import FerryWire

/// A TAP in memory: frames queued to be read (then "would block"), and frames written.
public final class FakeDevice: FrameDevice {
    public var pending: [[UInt8]] = []
    public var written: [[UInt8]] = []
    /// When set, writes report a full queue, as a TAP nobody reads does.
    public var refuseWrites = false
    public let pollDescriptor: Int32 = -1
    /// A TAP with offloads: every frame read and written starts with a virtio-net header.
    public var virtioHeader = false
    /// When set, a super-frame (a GSO virtio-net header) is refused with EINVAL.
    public var refuseSuperFrames = false
    public private(set) var refusedWrites = 0

    public init() {}

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(LinuxError) -> IOResult<Int> {
        guard !pending.isEmpty else { return .wouldBlock }
        let frame = pending.removeFirst()
        let n = min(frame.count, buffer.count)
        if n > 0 { frame.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: n) } }
        return .done(n)
    }

    public func write(_ frame: UnsafeRawBufferPointer) throws(LinuxError) -> IOResult<Int> {
        if refuseWrites { return .wouldBlock }
        if refuseSuperFrames, virtioHeader, VirtioNetHeader(frame).isGSO {
            refusedWrites += 1
            throw LinuxError("write TAP", errno: .invalidArgument)
        }
        written.append(Array(frame))
        return .done(frame.count)
    }
}
