import CFerryLinux
import Glibc
import SystemPackage

/// A Unix stream socket for the control channel: one request line, one reply, then close. The
/// server's side is non-blocking (`acceptNonBlocking`, `receive`, `sendSome`, driven by a poll
/// loop); a client's blocks, with a timeout on each read of the reply.
///
/// Not thread-safe: one thread uses a socket at a time.
public final class UnixSocket {
    public let fd: Int32

    init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }

    static func make() throws(LinuxError) -> UnixSocket {
        UnixSocket(fd: try SystemCall.call("socket AF_UNIX") {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        })
    }

    static func address(_ path: String) throws(LinuxError) -> sockaddr_un {
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: sa.sun_path) else {
            throw LinuxError("control socket \(path)", errno: .fileNameTooLong, hint: "use a path under 108 bytes")
        }
        withUnsafeMutableBytes(of: &sa.sun_path) { $0.copyBytes(from: bytes) }
        return sa
    }

    /// Listens at `path` with mode 0600 (the socket lets its user read the data plane's
    /// state; root's alone). Refuses to replace anything but a stale socket: a file that is not a
    /// socket, or a socket something answers on (another ferry), is an error that says so; a
    /// socket nothing listens on any more (a ferry that was killed) is removed first.
    public static func listen(at path: String, backlog: Int32 = 64) throws(LinuxError) -> UnixSocket {
        var sa = try address(path)
        if let existing = try FileIdentity(path: path) {
            guard existing.isSocket else {
                throw LinuxError("control socket \(path)", errno: .fileExists,
                                 hint: "it exists and is not a socket; remove it if nothing needs it, or choose another --control path")
            }
            switch probe(path) {
            case .answered:
                throw LinuxError("control socket \(path)", errno: .addressInUse,
                                 hint: "another ferry is running on \(path); stop it, or give this one another --tap or --control")
            case .gone:
                break
            case .stale:
                try SystemCall.call("remove stale control socket \(path)") { unlink(path) }
            case .failed(let e):
                throw LinuxError("control socket \(path): cannot tell whether a ferry uses it (connect: \(e))", errno: e,
                                 hint: "remove it if no ferry runs on it, or choose another --control path")
            }
        }
        let s = try make()
        // The socket's own mode is the file's at bind (less the umask), so the file never exists
        // with a wider one; the chmod after says so to any kernel that would not.
        fchmod(s.fd, 0o600)
        try SystemCall.call("bind control socket \(path)", hint: { e in
            e == .noSuchFileOrDirectory ? "the directory for \(path) does not exist" : nil
        }) {
            withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(s.fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            } }
        }
        do throws(LinuxError) {
            try SystemCall.call("chmod 0600 control socket \(path)") { chmod(path, 0o600) }
            guard let made = try FileIdentity(path: path), made.isSocket, made.permissions == 0o600 else {
                throw LinuxError("control socket \(path) is not the socket with mode 0600 just made", errno: .permissionDenied,
                                 hint: "something else changed it meanwhile; check who else writes to its directory")
            }
            s.boundFile = (path, made)
            try SystemCall.call("listen on \(path)") { Glibc.listen(s.fd, backlog) }
            try s.setNonBlocking()
        } catch {
            unlink(path)
            throw error
        }
        return s
    }

    /// What a connection to an existing socket file says about it.
    enum Probe { case answered, stale, gone, failed(Errno) }

    /// Tries `path` without blocking (a listener whose queue is full answers EAGAIN: it is there).
    static func probe(_ path: String) -> Probe {
        guard var sa = try? address(path) else { return .failed(.fileNameTooLong) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return .failed(Errno(rawValue: errno)) }
        defer { close(fd) }
        let r = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        } }
        if r == 0 { return .answered }
        switch errno {
        case EAGAIN, EINPROGRESS: return .answered
        case ECONNREFUSED: return .stale
        case ENOENT: return .gone
        case let e: return .failed(Errno(rawValue: e))
        }
    }

    /// The file a listener made and its identity, so that it removes its own socket only.
    private(set) var boundFile: (path: String, identity: FileIdentity)?

    /// Removes the socket file this listener made, unless another has replaced it since.
    public func removeBoundFile() {
        guard let (path, identity) = boundFile else { return }
        boundFile = nil
        if let now = try? FileIdentity(path: path), now.device == identity.device, now.inode == identity.inode {
            unlink(path)
        }
    }

    public static func connect(to path: String) throws(LinuxError) -> UnixSocket {
        let s = try make()
        var sa = try address(path)
        try SystemCall.call("connect to \(path)", hint: { e in
            switch e {
            case .noSuchFileOrDirectory, .connectionRefused: "no ferry is running with control socket \(path) (start one with ferry run, or give ferry ctl --tap NAME or --control PATH)"
            case .permissionDenied: "the control socket is root's; run as root"
            default: nil
            }
        }) {
            withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(s.fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            } }
        }
        return s
    }

    /// Makes every call on the socket non-blocking, and keeps it from programs this one runs.
    public func setNonBlocking() throws(LinuxError) {
        let flags = try SystemCall.call("fcntl F_GETFL") { fcntl(fd, F_GETFL) }
        try SystemCall.call("fcntl F_SETFL O_NONBLOCK") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
        try SystemCall.call("fcntl F_SETFD FD_CLOEXEC") { fcntl(fd, F_SETFD, FD_CLOEXEC) }
    }

    /// A connected pair, both ends non-blocking: a loop polls one end and another thread wakes
    /// it by writing a byte to the other.
    public static func pair() throws(LinuxError) -> (UnixSocket, UnixSocket) {
        var fds: (Int32, Int32) = (-1, -1)
        try withUnsafeMutableBytes(of: &fds) { (raw) throws(LinuxError) in
            let p = raw.baseAddress!.assumingMemoryBound(to: Int32.self)
            try SystemCall.call("socketpair AF_UNIX") {
                socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, p)
            }
        }
        return (UnixSocket(fd: fds.0), UnixSocket(fd: fds.1))
    }

    /// Accepts a waiting connection, non-blocking and close-on-exec; nil when none is waiting.
    public func acceptNonBlocking() throws(LinuxError) -> UnixSocket? {
        let r = try SystemCall.nonBlocking("accept control connection") { accept(fd, nil, nil) }
        guard let c = r.value else { return nil }
        let s = UnixSocket(fd: c)
        try s.setNonBlocking()
        return s
    }

    /// Reads what is there, at most `count` bytes, appending it to `bytes`, without blocking:
    /// the number read, 0 at the end (the peer shut its side), `.wouldBlock` when nothing waits.
    public func receive(upTo count: Int, appendingTo bytes: inout [UInt8]) throws(LinuxError) -> IOResult<Int> {
        var chunk = [UInt8](repeating: 0, count: count)
        let r = try SystemCall.nonBlocking("read control socket") {
            chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, count, Int32(MSG_DONTWAIT)) }
        }
        if let n = r.value { bytes += chunk[0..<n] }
        return r
    }

    /// Sends as much of `bytes` as the socket takes now, without blocking: how much, or
    /// `.wouldBlock` when it takes nothing. A peer that has gone is an error (EPIPE), never a
    /// SIGPIPE: `MSG_NOSIGNAL`.
    public func sendSome(_ bytes: ArraySlice<UInt8>) throws(LinuxError) -> IOResult<Int> {
        try SystemCall.nonBlocking("write control socket") {
            bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        }
    }

    /// Reads everything until the peer closes; gives up after 30 s without a byte.
    public func readAll() throws(LinuxError) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            // Generous: the first byte of `fdb` waits for a snapshot of up to 2^20 entries.
            guard Poller.wait(fd: fd, events: Int16(POLLIN), milliseconds: 30_000) else {
                throw LinuxError("read control reply", errno: .timedOut, hint: "the running ferry did not answer")
            }
            let n = try SystemCall.call("read control socket") { read(fd, &chunk, chunk.count) }
            if n == 0 { return bytes }
            bytes += chunk[0..<n]
        }
    }

    /// Writes all of `bytes`. A peer that has gone is an error (EPIPE), never a SIGPIPE that
    /// would end the process: `MSG_NOSIGNAL`.
    public func writeAll(_ bytes: [UInt8]) throws(LinuxError) {
        var offset = 0
        while offset < bytes.count {
            let n = try SystemCall.call("write control socket") {
                bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            }
            offset += n
        }
    }
}

/// A file's type, permissions and identity, as `lstat` gives them (a symlink is not followed).
struct FileIdentity {
    var mode: mode_t
    var device: UInt64
    var inode: UInt64

    /// The file at `path`; nil if there is none.
    init?(path: String) throws(LinuxError) {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            if errno == ENOENT { return nil }
            throw LinuxError("stat \(path)", errno: Errno(rawValue: errno))
        }
        mode = st.st_mode
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }

    var isSocket: Bool { mode & 0o170000 == 0o140000 }
    var permissions: mode_t { mode & 0o7777 }
}
