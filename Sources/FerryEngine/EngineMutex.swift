import Glibc  // dlsym only: looking up the sanitizer's hooks once
import Synchronization

/// `Mutex`, with its hand-offs told to ThreadSanitizer.
///
/// `Synchronization.Mutex` takes a contended lock in `_lockSlow` (a priority-inheritance
/// futex) inside the uninstrumented Swift runtime library, so under `--sanitize=thread` a lock
/// passed from one thread to another through the kernel makes no happens-before edge, and
/// every access it guards is reported as a race (a plain counter incremented under a `Mutex`
/// by four threads is reported, and ends exact). This wrapper marks each critical section with
/// `__tsan_acquire` / `__tsan_release` on a token of its own when the ThreadSanitizer runtime
/// is linked in (looked up once with `dlsym`; in any other build both are nil, and a lock costs
/// one load and branch more). The locking itself is `Mutex`'s.
public struct EngineMutex<Value>: ~Copyable {
    @usableFromInline let mutex: Mutex<Value>
    /// A stable address naming this lock to the sanitizer.
    @usableFromInline let token: UnsafeMutableRawPointer

    public init(_ value: sending Value) {
        mutex = Mutex(value)
        token = .allocate(byteCount: 1, alignment: 1)
    }

    deinit { token.deallocate() }

    /// Runs `body` with the value, under the lock (as `Mutex.withLock`).
    @inlinable
    public borrowing func withLock<Result, E: Error>(_ body: (inout sending Value) throws(E) -> sending Result)
        throws(E) -> sending Result {
        try mutex.withLock { (value: inout sending Value) throws(E) -> sending Result in
            SanitizerHooks.acquire?(token)
            defer { SanitizerHooks.release?(token) }
            return try body(&value)
        }
    }
}

extension EngineMutex: @unchecked Sendable {}

/// ThreadSanitizer's annotation entry points, when its runtime is in the process.
@usableFromInline
enum SanitizerHooks {
    @usableFromInline typealias Hook = @convention(c) (UnsafeMutableRawPointer?) -> Void
    @usableFromInline static let acquire: Hook? = look("__tsan_acquire")
    @usableFromInline static let release: Hook? = look("__tsan_release")

    static func look(_ name: String) -> Hook? {
        dlsym(UnsafeMutableRawPointer(bitPattern: 0), name).map { unsafeBitCast($0, to: Hook.self) }
    }
}
