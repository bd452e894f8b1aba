import CFerryLinux
import Glibc
import SystemPackage

// The one choke point for system calls: every call in FerryLinux goes through `SystemCall`,
// which retries EINTR, turns EAGAIN into `.wouldBlock` (a normal outcome for a non-blocking
// fd, not an error), and reads errno at once, before anything else can overwrite it.

/// The outcome of a non-blocking operation.
public enum IOResult<Value> {
    case done(Value)
    case wouldBlock

    public var value: Value? { if case .done(let v) = self { v } else { nil } }
}

/// A failed system call, with what was being done and, where it helps, how to fix it.
public struct LinuxError: Error, CustomStringConvertible, Equatable {
    public var operation: String
    public var errno: Errno
    public var hint: String?

    public init(_ operation: String, errno: Errno, hint: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.hint = hint
    }

    public var description: String {
        "\(operation): \(errno.description)" + (hint.map { "; \($0)" } ?? "")
    }
}

public enum SystemCall {
    /// Runs `body` until it does not fail with EINTR. A negative result becomes
    /// `.wouldBlock` for EAGAIN/EWOULDBLOCK and a thrown `LinuxError` otherwise.
    @inlinable
    public static func nonBlocking<T: BinaryInteger>(_ operation: @autoclosure () -> String,
                                                     _ body: () -> T) throws(LinuxError) -> IOResult<T> {
        while true {
            let r = body()
            if r >= 0 { return .done(r) }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            throw LinuxError(operation(), errno: Errno(rawValue: e))
        }
    }

    /// As `nonBlocking`, for calls that cannot block: EAGAIN is an error too.
    @inlinable @discardableResult
    public static func call<T: BinaryInteger>(_ operation: @autoclosure () -> String,
                                              hint: ((Errno) -> String?)? = nil,
                                              _ body: () -> T) throws(LinuxError) -> T {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e == EINTR { continue }
            let errno = Errno(rawValue: e)
            throw LinuxError(operation(), errno: errno, hint: hint?(errno))
        }
    }
}
