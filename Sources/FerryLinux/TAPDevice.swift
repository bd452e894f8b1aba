import CFerryLinux
import Glibc
import SystemPackage

/// A TAP device (`IFF_TAP | IFF_NO_PI`): Ethernet frames in and out through one fd.
/// Non-blocking; a read returns one frame.
public final class TAPDevice {
    public let fd: Int32
    /// The kernel's name for the device (it picks one for a pattern like `ferry%d`).
    public let name: String

    /// Creates the TAP `name`, or attaches to it if it exists (made persistent by `ip tuntap`
    /// or an earlier `persistent` run). `persistent` keeps it after Ferry exits.
    public init(name: String, persistent: Bool = false) throws(LinuxError) {
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
            case .invalidArgument:
                "\(name) exists and is not a TAP device (ip -d link show \(name))"
            case .resourceBusy:
                "\(name) is already open by another program"
            default: nil
            }
        }) { cferry_tap_open(name, CFERRY_IFF_TAP | CFERRY_IFF_NO_PI, &kernelName) }
        self.name = String(decoding: kernelName.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if persistent {
            try SystemCall.call("make TAP \(self.name) persistent") { cferry_tap_set_persist(fd, 1) }
        }
    }

    deinit { close(fd) }

    /// Reads one frame into `buffer`; `.wouldBlock` when none is waiting.
    @inlinable
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(LinuxError) -> IOResult<Int> {
        try SystemCall.nonBlocking("read TAP") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// Writes one frame. A full TAP queue (nobody reading on the bridge side) drops the frame,
    /// as a NIC does: `.wouldBlock`.
    @inlinable
    public func write(_ frame: UnsafeRawBufferPointer) throws(LinuxError) -> IOResult<Int> {
        try SystemCall.nonBlocking("write TAP") { Glibc.write(fd, frame.baseAddress, frame.count) }
    }

    /// Deletes a persistent TAP on close.
    public func removePersistence() throws(LinuxError) {
        try SystemCall.call("remove persistence of \(name)") { cferry_tap_set_persist(fd, 0) }
    }
}
