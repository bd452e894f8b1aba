import Atomics
import FerryLinux
import Histogram

/// One worker's batch times, egress and ingress, as HdrHistograms (hdrhistogram-swift): how
/// long a step took from the end of its receive call (the TAP read, the `recvmmsg`) to the end
/// of its sends (the TAP writes, the `sendmmsg`s). Nanoseconds, two significant digits (1 %),
/// up to `highest` (a longer batch counts as that).
///
/// ## Why double buffering, and how
///
/// The worker must not allocate, nor wait on the control side, and an HdrHistogram is a struct
/// over a plain array: no reader may look at the counts the worker is adding to (a race, and
/// a sanitizer report), and no reader may hold a reference to that array either (the worker's
/// next `record` would then copy it: an allocation on the packet path). A seqlock would have
/// the reader copy counts while they are written (a data race by the memory model, however
/// it is retried). So each worker owns two banks of histograms and records into one, the
/// *active* bank; the other belongs to the control side.
///
/// - The control side asks for the active bank by bumping `requested` (release).
/// - At its next batch boundary (the top of a step: `passBoundary()`, one acquire load and a
///   compare on the worker's own path), the worker sees `requested` ahead of `served`, makes
///   the other bank active, and stores `served` (release). That is all the worker does: no
///   lock, no copy, no wait.
/// - The control side, once it sees `served` reach its request (acquire), owns the bank the
///   worker left: it adds it into its running totals and clears it, and only then makes a new
///   request — so the worker can never be handed a bank the control side is still reading
///   (`drained` records which request's bank the totals hold; the worker's side needs none).
///
/// Which bank is active follows from `served` alone (bank `served % 2`): the worker swaps once
/// per request served, starting on bank 0. A worker idle in poll reaches a boundary within a
/// tenth of a second (its poll's timeout); a reading waits for it up to a deadline, and a
/// worker that does not answer in time (stopped, wedged) leaves its last batches out of that
/// reading (`Reading.current` false), to be counted by the next one.
///
/// `@unchecked Sendable`: the banks are handed between the worker and the control side only
/// through `requested` and `served` as above; the totals are under `reading`'s lock.
public final class BatchTimings: @unchecked Sendable {
    /// The longest batch time told apart: ten seconds.
    public static let highest: UInt64 = 10_000_000_000

    struct Bank {
        var egress: Histogram<UInt64>
        var ingress: Histogram<UInt64>

        init() {
            egress = Self.histogram()
            ingress = Self.histogram()
        }

        static func histogram() -> Histogram<UInt64> {
            Histogram(lowestDiscernibleValue: 1, highestTrackableValue: BatchTimings.highest, numberOfSignificantValueDigits: .two)
        }
    }

    /// What the control side has taken from the worker so far.
    public struct Reading: Sendable {
        public var egress: Histogram<UInt64>
        public var ingress: Histogram<UInt64>
        /// Whether the worker handed over its latest batches for this reading (false: it did
        /// not reach a batch boundary before the deadline).
        public var current: Bool
    }

    /// Two banks: the worker's active one (`served % 2`) and the control side's.
    let banks: UnsafeMutablePointer<Bank>
    let requested: UnsafeAtomic<UInt64>
    let served: UnsafeAtomic<UInt64>
    /// The worker's own copy of `served`, and its active bank: touched by its thread only.
    @exclusivity(unchecked) var servedByWorker: UInt64 = 0
    @exclusivity(unchecked) var active = 0
    /// The control side's totals, and the last request whose bank they include; under the
    /// lock, so that two readings take each bank once.
    struct Totals {
        var bank = Bank()
        var drained: UInt64 = 0
    }
    let totals = EngineMutex(Totals())

    public init() {
        banks = .allocate(capacity: 2)
        banks.initialize(to: Bank())
        (banks + 1).initialize(to: Bank())
        requested = .create(0)
        served = .create(0)
    }

    deinit {
        banks.deinitialize(count: 2)
        banks.deallocate()
        requested.destroy()
        served.destroy()
    }

    // MARK: The worker's side (its thread only)

    /// A batch boundary: hands the active bank over if the control side asked for it.
    @inline(__always)
    func passBoundary() {
        let asked = requested.load(ordering: .acquiring)
        if asked != servedByWorker { handOver(asked) }
    }

    @inline(never)
    func handOver(_ asked: UInt64) {
        active ^= 1
        servedByWorker = asked
        served.store(asked, ordering: .releasing)
    }

    /// An egress batch took `nanoseconds`. Out of line: it runs once per batch, and inlined
    /// into the step the histogram's code made the compiler lay the per-packet loop out worse
    /// (callgrind, 64 B frames: +48 instructions per packet inlined, +2.6 out of line).
    @inline(never)
    func recordEgress(_ nanoseconds: Int64) {
        banks[active].egress.record(Swift.min(UInt64(clamping: nanoseconds), Self.highest))
    }

    /// An ingress batch took `nanoseconds`. Out of line, as `recordEgress`.
    @inline(never)
    func recordIngress(_ nanoseconds: Int64) {
        banks[active].ingress.record(Swift.min(UInt64(clamping: nanoseconds), Self.highest))
    }

    // MARK: The control side (any thread)

    /// Every batch time recorded so far, the worker's latest included if it reaches a batch
    /// boundary within `timeoutMilliseconds`. Never blocks the worker.
    public func reading(timeoutMilliseconds: Int = 500) -> Reading {
        Self.readings([self], timeoutMilliseconds: timeoutMilliseconds)[0]
    }

    /// Takes what each worker handed over since the last time, and asks each for its active
    /// bank again; never waits. The engine calls it once a second (its surroundings thread),
    /// so the totals a reading without a wait returns are at most about two seconds old (a
    /// batch just after a hand-over waits for the next request, and that one's collection).
    public static func handOver(_ all: [BatchTimings]) {
        for t in all {
            // What was handed over into the totals first, so that the request is a new one.
            _ = t.collect(t.requested.load(ordering: .relaxed))
            _ = t.request()
        }
    }

    /// `reading()` of several workers at once: every request made first, then one deadline
    /// for all (an idle worker answers within its poll's tenth of a second). With no time to
    /// wait, what the workers handed over before.
    public static func readings(_ all: [BatchTimings], timeoutMilliseconds: Int = 500) -> [Reading] {
        let targets = all.map { $0.request() }
        let deadline = Scheduling.monotonicNanoseconds() + Int64(timeoutMilliseconds) * 1_000_000
        return zip(all, targets).map { t, target in
            while t.served.load(ordering: .acquiring) != target && Scheduling.monotonicNanoseconds() < deadline {
                Scheduling.sleep(milliseconds: 1)
            }
            return t.collect(target)
        }
    }

    /// Asks the worker for its active bank, unless a bank it handed over is still to be
    /// taken (the worker must not get it back before): the request to wait for.
    func request() -> UInt64 {
        totals.withLock { t in
            let asked = requested.load(ordering: .relaxed)
            guard served.load(ordering: .acquiring) == asked, t.drained == asked else { return asked }
            requested.store(asked &+ 1, ordering: .releasing)
            return asked &+ 1
        }
    }

    /// Takes the bank the worker handed over, if it did (and no reading took it already), into
    /// the totals; the totals, and whether they include request `target`.
    func collect(_ target: UInt64) -> Reading {
        totals.withLock { t in
            let done = served.load(ordering: .acquiring)
            if done != t.drained {
                // The worker now records into bank `done % 2`; the other is ours until the
                // next request.
                let ours = banks + Int((done &+ 1) % 2)
                t.bank.egress.add(ours.pointee.egress)
                t.bank.ingress.add(ours.pointee.ingress)
                ours.pointee.egress.reset()
                ours.pointee.ingress.reset()
                t.drained = done
            }
            return Reading(egress: t.bank.egress, ingress: t.bank.ingress, current: t.drained == target)
        }
    }
}

extension Statistics.BatchTimes {
    /// Percentiles of `histogram` (nanoseconds): nil if it holds nothing.
    init?(_ histogram: Histogram<UInt64>) {
        guard histogram.totalCount > 0 else { return nil }
        self.init(batches: histogram.totalCount, p50: histogram.valueAtPercentile(50),
                  p99: histogram.valueAtPercentile(99), maximum: histogram.max)
    }
}
