import Glibc

/// poll(2) over a few descriptors, for loops that sleep until there is work or a deadline.
public enum Poller {
    /// Waits until one of `fds` is readable, up to `milliseconds`; returns which are.
    public static func waitReadable(_ fds: [Int32], milliseconds: Int32) -> [Bool] {
        var set = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let r = set.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t($0.count), milliseconds) }
        guard r > 0 else { return Array(repeating: false, count: fds.count) }
        return set.map { $0.revents & Int16(POLLIN | POLLERR | POLLHUP) != 0 }
    }

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
