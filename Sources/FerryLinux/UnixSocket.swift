import CFerryLinux
import Glibc
import SystemPackage

/// A Unix stream socket for the control channel: one request line, one reply, then close.
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

    /// Listens at `path`, replacing a stale socket file left by a process that is gone.
    public static func listen(at path: String) throws(LinuxError) -> UnixSocket {
        if (try? connect(to: path)) != nil {
            throw LinuxError("control socket \(path)", errno: .addressInUse,
                             hint: "another ferry is running with this --control path; stop it or choose another")
        }
        unlink(path)
        let s = try make()
        var sa = try address(path)
        try SystemCall.call("bind control socket \(path)", hint: { e in
            e == .noSuchFileOrDirectory ? "the directory for \(path) does not exist" : nil
        }) {
            withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(s.fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            } }
        }
        chmod(path, 0o600)
        try SystemCall.call("listen on \(path)") { Glibc.listen(s.fd, 8) }
        return s
    }

    /// Removes the socket file a listener made at `path` (when it stops listening).
    public static func removeFile(at path: String) { unlink(path) }

    public static func connect(to path: String) throws(LinuxError) -> UnixSocket {
        let s = try make()
        var sa = try address(path)
        try SystemCall.call("connect to \(path)", hint: { e in
            switch e {
            case .noSuchFileOrDirectory, .connectionRefused: "no ferry is running with control socket \(path) (start one with ferry run, or pass --control)"
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

    /// Accepts a connection if one is waiting within `milliseconds`.
    public func accept(waitingUpTo milliseconds: Int32) throws(LinuxError) -> UnixSocket? {
        guard Poller.wait(fd: fd, events: Int16(POLLIN), milliseconds: milliseconds) else { return nil }
        let c = try SystemCall.call("accept control connection") { Glibc.accept(fd, nil, nil) }
        return UnixSocket(fd: c)
    }

    /// Reads up to a newline or the end (at most `limit` bytes), waiting at most 2 s.
    public func readLine(limit: Int = 4096) throws(LinuxError) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while bytes.count < limit, !bytes.contains(10) {
            guard Poller.wait(fd: fd, events: Int16(POLLIN), milliseconds: 2000) else { break }
            // Never past the limit: a chunk reads at most what is left of it.
            let want = min(chunk.count, limit - bytes.count)
            let n = try SystemCall.call("read control socket") { read(fd, &chunk, want) }
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes.prefix { $0 != 10 }, as: UTF8.self)
    }

    /// Reads everything until the peer closes.
    public func readAll() throws(LinuxError) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            guard Poller.wait(fd: fd, events: Int16(POLLIN), milliseconds: 5000) else {
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
