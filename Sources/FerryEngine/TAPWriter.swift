import FerryLinux
import FerryWire

/// Ingress's last stage: inner frames to the TAP. With offloads (a TAP with a virtio-net
/// header), consecutive segments of a TCP flow (with USO, datagrams of a UDP flow) are joined
/// into one super-frame, one write for many packets; the rest go behind an empty virtio-net
/// header written in the bytes the tunnel header held. A super-frame the kernel refuses
/// (EINVAL: a TAP that takes no GSO writes) is written again as the segments it was joined
/// from, and joining stops for a back-off (`OffloadFallbacks`), then resumes.
///
/// A TCP or UDP segment whose sender left its checksum partial (`PartialChecksum`: a peer's
/// kernel behind a virtual underlay) goes with NEEDS_CSUM, as the kernel's own vxlan would
/// deliver it; with no virtio-net header, Ferry finishes its checksum before the write. Such a
/// TCP segment longer than the MTU (the peer's GSO super-frame, which crossed its veth whole) goes
/// as a TCP super-frame when segments are joined (the TAP takes those), else cut here into
/// segments that fit, each with its full checksum.
final class TAPWriter<Device: FrameDevice> {
    let device: Device
    let virtioLength: Int
    let counters: CounterBlock
    let layout: CounterLayout
    let fallbacks: OffloadFallbacks
    let coalescer: SegmentCoalescer
    /// Where a refused super-frame is cut into the segments it was joined from, and an
    /// oversize partial one into segments that fit.
    let unjoinArea: OwnedBytes
    /// The largest IP packet the TAP's side takes (what the tunnel carries whole).
    let mtu: Int
    /// Received segments are joined (the TAP has a virtio-net header, joining was not turned
    /// off, nor refused by the kernel within its back-off). Touched by the worker's thread only.
    @exclusivity(unchecked) var joinsSegments: Bool
    /// Whether joining is on when the kernel has not refused it.
    let joinsWhenAllowed: Bool
    @exclusivity(unchecked) var coalescedReported = 0
    @exclusivity(unchecked) var partialsReported = 0

    init(device: Device, joinsSegments joins: Bool, mtu: Int, counters: CounterBlock, layout: CounterLayout,
         fallbacks: OffloadFallbacks) {
        self.device = device
        self.mtu = mtu
        virtioLength = device.virtioHeader ? VirtioNetHeader.length : 0
        self.counters = counters
        self.layout = layout
        self.fallbacks = fallbacks
        joinsSegments = device.virtioHeader && joins
        joinsWhenAllowed = joinsSegments
        unjoinArea = OwnedBytes(count: 1 << 18)
        coalescer = SegmentCoalescer(slots: joinsSegments ? 8 : 1, capacity: joinsSegments ? 65535 + 18 : 64,
                                     udp: device.udpSegmentation, mtu: mtu)
    }

    /// Joins segments again after a refusal's back-off (between steps: the coalescer is empty).
    func resumeJoining() { joinsSegments = joinsWhenAllowed }

    /// Delivers a decapsulated frame, which has `virtioLength` writable bytes in front of it.
    @inline(__always)
    func deliver(_ inner: UnsafeRawBufferPointer) {
        let plain = UnsafeMutableRawPointer(mutating: inner.baseAddress!) - virtioLength
        if joinsSegments {
            coalescer.add(inner, plain: plain) { write($0) }
            // Refused just now: what the coalescer holds goes before what follows.
            if !joinsSegments { coalescer.flush { write($0) } }
            return
        }
        // Only the headers are read to tell a partial checksum.
        if let partial = PartialChecksum.find(in: inner) {
            deliver(inner, partial: partial)
        } else if virtioLength > 0 {
            SegmentCoalescer.emitPlain(inner, plain) { write($0) }
        } else {
            write(inner)
        }
    }

    /// A frame whose sender left the checksum partial, when segments are not joined: behind
    /// NEEDS_CSUM, or finished here with no virtio-net header; cut here when longer than `mtu`.
    @inline(never)
    func deliver(_ inner: UnsafeRawBufferPointer, partial: PartialChecksum) {
        counters.add(layout.index(.partialChecksums))
        let frame = UnsafeMutableRawBufferPointer(mutating: UnsafeRawBufferPointer(rebasing: inner[..<partial.end]))
        if let header = partial.superFrameHeader(UnsafeRawBufferPointer(frame), mtu: mtu) {
            writeSegments(of: UnsafeRawBufferPointer(frame), header: header)
        } else if virtioLength > 0 {
            let plain = frame.baseAddress! - virtioLength
            partial.header.write(to: plain)
            write(UnsafeRawBufferPointer(start: plain, count: virtioLength + frame.count))
        } else {
            partial.complete(frame)
            write(UnsafeRawBufferPointer(frame))
        }
    }

    /// Writes what the coalescer still holds; at the end of each ingress step (also when
    /// joining stopped during it: runs gathered before are written).
    func finishBatch() {
        guard virtioLength > 0 else { return }
        coalescer.flush { write($0) }
        counters.add(layout.index(.coalescedSegments), UInt64(coalescer.merged - coalescedReported))
        coalescedReported = coalescer.merged
        if coalescer.partials != partialsReported {
            counters.add(layout.index(.partialChecksums), UInt64(coalescer.partials - partialsReported))
            partialsReported = coalescer.partials
        }
    }

    /// One write to the TAP (a frame, or a super-frame behind its virtio-net header).
    @inline(__always)
    func write(_ bytes: UnsafeRawBufferPointer) {
        do {
            guard case .done = try device.write(bytes) else {
                counters.add(layout.index(DropReason.tapQueueFull))
                return
            }
            counters.add(layout.index(.tapWrittenFrames))
            counters.add(layout.index(.tapWrittenBytes), UInt64(bytes.count - virtioLength))
        } catch {
            refused(bytes, error)
        }
    }

    /// A TAP write the kernel refused (out of line: the cold path).
    @inline(never)
    func refused(_ bytes: UnsafeRawBufferPointer, _ error: LinuxError) {
        // EINVAL for a super-frame is the kernel refusing GSO writes; anything else (EIO from a
        // TAP that is down) is not a reason to stop joining.
        guard error.errno == .invalidArgument, virtioLength > 0, VirtioNetHeader(bytes).isGSO else {
            counters.add(layout.index(DropReason.tapWriteFailed))
            return
        }
        if joinsSegments {
            joinsSegments = false
            fallbacks.withdraw(.genericReceive)
        }
        writeSegments(of: UnsafeRawBufferPointer(rebasing: bytes[virtioLength...]), header: VirtioNetHeader(bytes))
    }

    /// Cuts the super-frame `frame` (described by `header`) into segments with full checksums
    /// and writes each, behind an empty virtio-net header if the TAP has one.
    func writeSegments(of frame: UnsafeRawBufferPointer, header: VirtioNetHeader) {
        let area = unjoinArea.bytes, gap = virtioLength
        do {
            _ = try Segmentation.segment(frame, header: header, into: area, gap: gap) { offset, length in
                let out = area.baseAddress! + offset - gap
                out.initializeMemory(as: UInt8.self, repeating: 0, count: gap)
                write(UnsafeRawBufferPointer(start: out, count: gap + length))
            }
        } catch {
            counters.add(layout.index(DropReason.tapWriteFailed))
        }
    }
}
