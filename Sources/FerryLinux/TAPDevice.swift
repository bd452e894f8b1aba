import CFerryLinux
import Glibc
import SystemPackage

/// A TAP device (`IFF_TAP | IFF_NO_PI`): Ethernet frames in and out through one fd.
/// Non-blocking; a read returns one frame.
public final class TAPDevice {
    public let fd: Int32
    /// The kernel's name for the device (it picks one for a pattern like `ferry%d`).
    public let name: String
    /// Frames carry a virtio-net header (IFF_VNET_HDR) in both directions.
    public let virtioHeader: Bool
    /// The TUNSETOFFLOAD flags the kernel accepted (TUN_F_CSUM, TSO4, TSO6, …); 0 without.
    public let offloads: UInt32

    public static let offloadChecksum: UInt32 = 0x01
    public static let offloadTSO4: UInt32 = 0x02
    public static let offloadTSO6: UInt32 = 0x04
    /// UDP segmentation offload (Linux 6.2): the kernel takes both or neither.
    public static let offloadUSO4: UInt32 = 0x20
    public static let offloadUSO6: UInt32 = 0x40

    /// Creates the TAP `name`, or attaches to it if it exists (made persistent by `ip tuntap`
    /// or an earlier `persistent` run). `persistent` keeps it after Ferry exits.
    /// With `offloads` (TUNSETOFFLOAD flags: `offloadChecksum`, and with it the TSO and USO
    /// pairs), the TAP is opened with a virtio-net header and asks for them, so that the kernel
    /// hands over 64 KiB TCP and UDP super-frames and leaves checksums to finish, and takes them
    /// back. What the kernel refuses is simply not used: without USO (before Linux 6.2), then
    /// with checksums alone. With 0, frames come and go as they are, without a header.
    ///
    /// With `multiQueue` (IFF_MULTI_QUEUE), each TAPDevice opened on the same name is one more
    /// queue of the device, and the kernel spreads the frames it transmits over the queues by
    /// flow (see `steerByFlow`).
    public init(name: String, persistent: Bool = false, offloads: UInt32 = 0, multiQueue: Bool = false) throws(LinuxError) {
        guard !name.isEmpty, name.utf8.count < Int(CFERRY_IFNAMSIZ) else {
            throw LinuxError("open TAP \(name)", errno: .invalidArgument,
                             hint: "an interface name has 1 to \(CFERRY_IFNAMSIZ - 1) characters")
        }
        var kernelName = [CChar](repeating: 0, count: Int(CFERRY_IFNAMSIZ))
        fd = try SystemCall.call("open TAP \(name)", hint: { e in
            switch e {
            case .notPermitted, .permissionDenied:
                "creating or attaching to a TAP needs root or CAP_NET_ADMIN (or a persistent TAP owned by this user: ip tuntap add \(name) mode tap user $USER)"
            case .noSuchFileOrDirectory, .operationNotSupportedByDevice:
                "/dev/net/tun is missing; load the tun module (modprobe tun)"
            case .invalidArgument where multiQueue:
                "\(name) exists without multi-queue (or is not a TAP); delete it (ip link del \(name)) or run one worker (--workers 1)"
            case .invalidArgument:
                "\(name) exists and is not a TAP device, or is a multi-queue one (ip -d link show \(name))"
            case .resourceBusy:
                "\(name) is already open by another program"
            default: nil
            }
        }) { cferry_tap_open(name, CFERRY_IFF_TAP | CFERRY_IFF_NO_PI | (offloads != 0 ? CFERRY_IFF_VNET_HDR : 0)
                                            | (multiQueue ? CFERRY_IFF_MULTI_QUEUE : 0), &kernelName) }
        virtioHeader = offloads != 0
        var accepted: UInt32 = 0
        if offloads != 0 {
            // Always set the header size: a persistent TAP keeps what another process set.
            _ = cferry_tap_set_vnet_header_size(fd, Int32(10))
            // The richest set the kernel takes: all asked, then without USO, then checksums only.
            let uso = Self.offloadUSO4 | Self.offloadUSO6
            let choices = [offloads, offloads & ~uso, offloads & Self.offloadChecksum].filter { $0 != 0 }
            let descriptor = fd
            if let taken = choices.first(where: { cferry_tap_set_offload(descriptor, $0) == 0 }) {
                accepted = taken
            } else {
                _ = cferry_tap_set_offload(fd, 0)
            }
        } else {
            // A persistent TAP keeps the offloads an earlier run set, which frames without a
            // header could not describe.
            _ = cferry_tap_set_offload(fd, 0)
        }
        self.offloads = accepted
        self.name = String(decoding: kernelName.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if persistent {
            try SystemCall.call("make TAP \(self.name) persistent") { cferry_tap_set_persist(fd, 1) }
        }
    }

    deinit { close(fd) }

    /// Reads one frame into `buffer`; `.wouldBlock` when none is waiting.
    @inlinable
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(LinuxError) -> IOResult<Int> {
        do {
            return try SystemCall.nonBlocking("read TAP") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
        } catch {
            throw explained(error)
        }
    }

    /// A read error as an operator should read it: EBADFD ("file descriptor in bad state")
    /// is the kernel saying the device went away under the open descriptor.
    @usableFromInline @inline(never)
    func explained(_ error: LinuxError) -> LinuxError {
        guard error.errno == Errno(rawValue: EBADFD) else { return error }
        return LinuxError("read TAP \(name)", errno: error.errno,
                          hint: "the TAP was deleted under Ferry (ip link del \(name)); start Ferry again to recreate it")
    }

    /// Writes one frame. A full TAP queue (nobody reading on the bridge side) drops the frame,
    /// as a NIC does: `.wouldBlock`.
    @inlinable
    public func write(_ frame: UnsafeRawBufferPointer) throws(LinuxError) -> IOResult<Int> {
        try SystemCall.nonBlocking("write TAP") { Glibc.write(fd, frame.baseAddress, frame.count) }
    }

    /// Makes a multi-queue TAP choose each frame's queue from its flow's addresses and ports
    /// alone (a steering program), so that a flow never moves between queues. Without it the
    /// kernel follows the queue that last wrote the flow's replies, and a one-way flow moves
    /// once that entry is 3 s old. The error carries the verifier's log if it said no.
    public func steerByFlow() throws(LinuxError) {
        var log = [CChar](repeating: 0, count: 1 << 16)
        let r = log.withUnsafeMutableBufferPointer { cferry_tap_steer_by_flow(fd, $0.baseAddress, UInt32($0.count)) }
        guard r == 0 else {
            let e = Errno(rawValue: errno)
            let verifier = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw LinuxError("attach a flow steering program to \(name)", errno: e,
                             hint: verifier.isEmpty ? "loading BPF programs needs CAP_BPF (or root)" : "verifier: \(verifier)")
        }
    }

    /// Deletes a persistent TAP on close.
    public func removePersistence() throws(LinuxError) {
        try SystemCall.call("remove persistence of \(name)") { cferry_tap_set_persist(fd, 0) }
    }
}
