#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// When a frame was captured, in the microsecond resolution of classic pcap files.
///
/// Invariant: `0 <= microseconds < 1_000_000`; the initializer carries any excess (or a negative
/// value) into `seconds`, so two timestamps for the same instant always compare equal.
public struct PacketTimestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Whole seconds since the Unix epoch (UTC).
    public let seconds: Int64
    /// Microseconds within the second, `0..<1_000_000`.
    public let microseconds: Int32

    public init(seconds: Int64, microseconds: Int32) {
        let carry = Int64(microseconds).quotientAndRemainder(dividingBy: 1_000_000)
        // Floor division, so that -1 µs is (seconds - 1, 999_999) rather than (seconds, -1).
        let negative = carry.remainder < 0
        self.seconds = seconds + carry.quotient - (negative ? 1 : 0)
        self.microseconds = Int32(carry.remainder + (negative ? 1_000_000 : 0))
    }

    var timeValue: timeval {
        // pcap_pkthdr carries a struct timeval, whose field types differ between platforms.
        var time = timeval()
        time.tv_sec = .init(truncatingIfNeeded: seconds)
        time.tv_usec = .init(microseconds)
        return time
    }

    /// The current wall-clock time (`CLOCK_REALTIME`), as a live capture would stamp a frame.
    public static func now() -> PacketTimestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return PacketTimestamp(seconds: Int64(spec.tv_sec), microseconds: Int32(spec.tv_nsec / 1_000))
    }

    public static func < (lhs: PacketTimestamp, rhs: PacketTimestamp) -> Bool {
        (lhs.seconds, lhs.microseconds) < (rhs.seconds, rhs.microseconds)
    }

    /// `seconds.micros`, as tcpdump's `-tt` prints it.
    public var description: String {
        let micros = String(microseconds)
        return "\(seconds)." + String(repeating: "0", count: 6 - micros.count) + micros
    }
}
