import Glibc

/// poll(2) over a few descriptors, for loops that sleep until there is work or a deadline.
public enum Poller {
    /// Waits for `events` on one descriptor; true when they came before the timeout.
    public static func wait(fd: Int32, events: Int16, milliseconds: Int32) -> Bool {
        var p = pollfd(fd: fd, events: events, revents: 0)
        return poll(&p, 1, milliseconds) > 0 && p.revents & events != 0
    }

    /// Waits until `a` or `b` is readable, up to `milliseconds` (a negative descriptor is
    /// ignored). Nothing allocated: a worker calls this each time it runs out of work.
    @discardableResult
    public static func waitReadable(_ a: Int32, _ b: Int32, milliseconds: Int32) -> Bool {
        var set = (pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0))
        return withUnsafeMutableBytes(of: &set) {
            poll($0.baseAddress!.assumingMemoryBound(to: pollfd.self), 2, milliseconds) > 0
        }
    }
}
