/// The offloads one worker set aside because the kernel refused them at run time, and when each
/// is tried again: the one path by which a runtime fallback is reported. Where the refusal
/// meets the error (the UDP sender that resent a refused GSO message datagram by datagram, the
/// TAP writer that wrote a refused super-frame as its segments) calls `withdraw`; this counts
/// it, sets the offload aside for a back-off, and tells the engine (which logs it). A refusal
/// may be transient (an EINVAL or EMSGSIZE from one path, one batch), so the offload is not
/// given up for good: at the first step past its back-off (each step compares its clock
/// reading with `nextRetry`, then calls `retry`) it is used again and counted as retried. The back-off starts at `firstBackOff`, doubles on each refusal that
/// follows the previous one within `quietPeriod`, up to `maximumBackOff`, and starts again
/// from the first after a quiet period. So a kernel that always refuses costs one refused
/// (and resent) message per worker every minute, and is logged as often at most.
final class OffloadFallbacks {
    typealias Event = OffloadChange

    static var firstBackOff: Int64 { 1 }
    static var maximumBackOff: Int64 { 60 }
    /// A refusal this long after the last one starts the back-off afresh.
    static var quietPeriod: Int64 { 300 }
    /// The offloads withdrawn at run time, each with its own back-off.
    static let tracked: [Offloads] = [.genericSegmentation, .genericReceive]

    struct Track {
        var retryAt = Int64.max
        var backOff: Int64 = 0
        var lastRefusal = Int64.min
        var refusals = 0
    }

    // Touched by the worker's thread only (so exclusivity is not checked at run time).
    @exclusivity(unchecked) private(set) var withdrawn: Offloads = []
    /// The earliest `retryAt` of the withdrawn offloads (`Int64.max`: none): what each step
    /// compares its clock reading with.
    @exclusivity(unchecked) private(set) var nextRetry = Int64.max
    @exclusivity(unchecked) var tracks: [Track]
    let counters: CounterBlock
    let withdrawnIndex: Int
    let retriedIndex: Int
    let clock: @Sendable () -> Int64
    let report: @Sendable (Event) -> Void

    init(counters: CounterBlock, layout: CounterLayout, clock: @escaping @Sendable () -> Int64,
         report: @escaping @Sendable (Event) -> Void) {
        self.counters = counters
        withdrawnIndex = layout.index(.offloadsWithdrawn)
        retriedIndex = layout.index(.offloadsRetried)
        self.clock = clock
        self.report = report
        tracks = Array(repeating: Track(), count: Self.tracked.count)
    }

    /// Whether UDP GSO sends are set aside (read per message built).
    @inline(__always) var segmentationWithdrawn: Bool { withdrawn.contains(.genericSegmentation) }

    /// Stops using `offload` on this worker for its back-off; a refusal while it is already
    /// set aside (another message of the same flush) changes nothing.
    @inline(never)
    func withdraw(_ offload: Offloads) {
        guard !withdrawn.contains(offload), let t = Self.tracked.firstIndex(of: offload) else { return }
        let now = clock()
        var track = tracks[t]
        let soon = track.lastRefusal != Int64.min && now - track.lastRefusal < Self.quietPeriod
        track.backOff = soon ? min(2 * track.backOff, Self.maximumBackOff) : Self.firstBackOff
        track.refusals = soon ? track.refusals + 1 : 1
        track.lastRefusal = now
        // The clock counts whole seconds: one more, so that the offload is off for at least
        // the back-off.
        track.retryAt = now + track.backOff + 1
        tracks[t] = track
        withdrawn.insert(offload)
        nextRetry = min(nextRetry, track.retryAt)
        counters.add(withdrawnIndex)
        report(.withdrawn(offload, backOff: track.backOff, refusals: track.refusals))
    }

    /// Uses again each withdrawn offload whose back-off has passed at `now` (the worker's clock,
    /// read once per step); returns those.
    @inline(never)
    func retry(at now: Int64) -> Offloads {
        var retried: Offloads = []
        nextRetry = Int64.max
        for (t, offload) in Self.tracked.enumerated() where withdrawn.contains(offload) {
            if now >= tracks[t].retryAt {
                tracks[t].retryAt = Int64.max
                withdrawn.remove(offload)
                retried.insert(offload)
                counters.add(retriedIndex)
                report(.retried(offload))
            } else {
                nextRetry = min(nextRetry, tracks[t].retryAt)
            }
        }
        return retried
    }
}

/// A change in the offloads a worker uses at run time, as the engine hears of it.
public enum OffloadChange: Sendable, Equatable {
    /// `offload` was refused (the `refusals`-th time in a row, each within the quiet period of
    /// the last) and is set aside for `backOff` seconds.
    case withdrawn(Offloads, backOff: Int64, refusals: Int)
    /// `offload`'s back-off has passed: it is used again.
    case retried(Offloads)
}
