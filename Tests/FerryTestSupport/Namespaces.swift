import CFerryLinux
import Dispatch
import Foundation
import Testing

/// Test code run inside a network namespace the test built (`ip netns add NAME`).
public enum Namespaces {
    /// Runs `body` on a thread of its own that has entered namespace `name` (setns moves the
    /// calling thread only, and this thread ends with `body`).
    public static func run<T: Sendable>(in name: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
        let fd = open("/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0, "no namespace \(name)")
        defer { close(fd) }
        let box = Outcome<T>()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            box.entered = cferry_setns(fd, 0x4000_0000 /* CLONE_NEWNET */) == 0
            if box.entered { box.result = Result { try body() } }
            done.signal()
        }
        thread.start()
        done.wait()
        try #require(box.entered, "setns into \(name)")
        return try box.result!.get()
    }

    /// What the namespace's thread hands back; written by it before the semaphore, read after.
    final class Outcome<T>: @unchecked Sendable {
        var result: Result<T, Error>?
        var entered = false
    }
}
