import CFerryLinux
import Glibc

/// The clock and the scheduler, for the engine's loops: what they need of the kernel besides
/// descriptors.
public enum Scheduling {
    /// Whole seconds of CLOCK_MONOTONIC: the data plane's clock (ageing, rate limits).
    public static func monotonicSeconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec)
    }

    /// CLOCK_MONOTONIC in nanoseconds: for deadlines off the packet path.
    public static func monotonicNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
    }

    /// CLOCK_REALTIME, for capture timestamps (read through the vDSO: no system call).
    public static func wallClock() -> (seconds: Int64, nanoseconds: Int) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return (Int64(ts.tv_sec), Int(ts.tv_nsec))
    }

    /// Names the calling thread for the kernel (`/proc/PID/task/TID/comm`, `top -H`, `ps -L`),
    /// cut to the 15 bytes it keeps. Foundation's `Thread.name` does not reach the kernel here.
    public static func nameCurrentThread(_ name: String) {
        _ = cferry_set_thread_name(String(decoding: Array(name.utf8.prefix(15)), as: UTF8.self))
    }

    /// Gives the core to another thread (a spinning reader whose writer may have been preempted).
    @inlinable
    public static func yield() { sched_yield() }

    /// Sleeps for `milliseconds`, however often a signal interrupts it.
    public static func sleep(milliseconds: Int) {
        var left = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var rest = timespec()
        while nanosleep(&left, &rest) != 0 && errno == EINTR { left = rest }
    }
}
