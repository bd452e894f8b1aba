import CFerryLinux
import Glibc
import SystemPackage

/// Unix datagram sockets, for the service manager's notify protocol: `send` is what a daemon
/// does (one datagram to `$NOTIFY_SOCKET`), `UnixDatagramReceiver` what systemd does (bound to
/// a name, reading datagrams), for tests and tools.
///
/// A name is a path, or `@name` for the abstract namespace (no file; the name's bytes follow a
/// NUL, with no NUL after them). Abstract names belong to a network namespace, paths to the
/// file system: a daemon in another network namespace reaches only a path.
public enum UnixDatagram {
    /// The address for `name` and its length (an abstract name's length counts its bytes only).
    static func address(_ name: String) throws(LinuxError) -> (sockaddr_un, socklen_t) {
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        let room = MemoryLayout.size(ofValue: sa.sun_path)
        guard bytes.count > (abstract ? 1 : 0), bytes.count < room else {
            throw LinuxError("unix socket name '\(name)'", errno: bytes.count >= room ? .fileNameTooLong : .invalidArgument,
                             hint: "a path or an @abstract name of 1 to \(room - 1) bytes")
        }
        withUnsafeMutableBytes(of: &sa.sun_path) { $0.copyBytes(from: bytes) }
        let offset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        return (sa, socklen_t(offset + bytes.count + (abstract ? 0 : 1)))
    }

    static func socket() throws(LinuxError) -> Int32 {
        try SystemCall.call("socket AF_UNIX SOCK_DGRAM") {
            Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
    }

    /// Sends `bytes` as one datagram to `name` from a socket of its own (as sd_notify does: the
    /// receiver may have been re-created since the last send). Never blocks for long: a
    /// receiver whose queue is full makes it fail with EAGAIN rather than wait.
    public static func send(_ bytes: [UInt8], to name: String) throws(LinuxError) {
        let fd = try socket()
        defer { close(fd) }
        var (sa, length) = try address(name)
        try SystemCall.call("send to \(name)", hint: { e in
            switch e {
            case .noSuchFileOrDirectory, .connectionRefused: "nothing listens on \(name)"
            case .permissionDenied: "\(name) is not writable by this user"
            default: nil
            }
        }) {
            bytes.withUnsafeBytes { buffer in
                withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT), $0, length)
                } }
            }
        }
    }
}

/// A bound Unix datagram socket that reads what is sent to its name: the service manager's
/// side of the notify protocol. Removes its file (a path name) when closed.
///
/// Not thread-safe: one thread uses it at a time.
public final class UnixDatagramReceiver {
    public let name: String
    let fd: Int32

    /// Binds `name` (a path, which must not exist, or `@abstract`).
    public init(name: String) throws(LinuxError) {
        self.name = name
        fd = try UnixDatagram.socket()
        var (sa, length) = try UnixDatagram.address(name)
        do throws(LinuxError) {
            try SystemCall.call("bind \(name)") {
                withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit {
        close(fd)
        if !name.hasPrefix("@") { unlink(name) }
    }

    /// The next datagram, waiting up to `milliseconds`; nil when none came.
    public func receive(milliseconds: Int32) throws(LinuxError) -> [UInt8]? {
        guard Poller.wait(fd: fd, events: Int16(POLLIN), milliseconds: milliseconds) else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = try SystemCall.nonBlocking("receive on \(name)") {
            buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        }
        guard let count = n.value else { return nil }
        return Array(buffer.prefix(count))
    }
}
