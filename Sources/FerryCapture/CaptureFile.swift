#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where capture files are opened, for every writer: created readable by their owner alone
/// (they hold container traffic), never through a symbolic link.
public enum CaptureFile {
    /// Opens `path` for writing a capture and returns the descriptor, which the caller owns.
    ///
    /// A regular file is created with mode 0600, or truncated and set to 0600 if it exists. A
    /// FIFO is opened as it is (and the open waits, as tcpdump's does, until a reader has it
    /// open). `-` is standard output, not opened: the caller must not close descriptor 1 as
    /// its own. The last component is never followed if it is a symbolic link: that throws
    /// `.symbolicLink`; anything else that stops the open throws `.write` with the system's
    /// reason.
    public static func create(path: String) throws(CaptureError) -> Int32 {
        if path == "-" { return STDOUT_FILENO }
        var fd: Int32
        repeat {
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, S_IRUSR | S_IWUSR)
        } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            let error = errno
            var info = stat()
            // ELOOP is also what too many links further up the path give: ask what it is.
            if error == ELOOP, lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFLNK {
                throw .symbolicLink(path: path)
            }
            throw .write(path: path, reason: String(cString: strerror(error)))
        }
        var info = stat()
        // An existing file keeps its mode through O_TRUNC: tighten it, as a new one is made.
        if fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_mode & 0o7777 != 0o600,
           fchmod(fd, S_IRUSR | S_IWUSR) != 0 {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw .write(path: path, reason: "cannot make it readable by its owner only (\(reason))")
        }
        return fd
    }

    /// Whether `fd` is a pipe, a FIFO or a socket: a sink whose reader may stall, and that a
    /// writer should therefore not block on.
    public static func isStream(_ fd: Int32) -> Bool {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return false }
        let type = info.st_mode & S_IFMT
        return type == S_IFIFO || type == S_IFSOCK
    }
}
