/// The offloads one worker gave up because the kernel refused them at run time: the one path
/// by which a runtime fallback is reported. Where the refusal meets the error (the UDP sender
/// that resent a refused GSO message datagram by datagram, the TAP writer that wrote a refused
/// super-frame as its segments) calls `withdraw`; this counts it, remembers it for the worker's
/// packet path, and tells the engine once (which logs it).
final class OffloadFallbacks {
    /// Touched by the worker's thread only (so exclusivity is not checked at run time).
    @exclusivity(unchecked) private(set) var withdrawn: Offloads = []
    let counters: CounterBlock
    let index: Int
    let report: @Sendable (Offloads) -> Void

    init(counters: CounterBlock, layout: CounterLayout, report: @escaping @Sendable (Offloads) -> Void) {
        self.counters = counters
        index = layout.index(.offloadsWithdrawn)
        self.report = report
    }

    /// Whether UDP GSO sends were given up (read per message built).
    @inline(__always) var segmentationWithdrawn: Bool { withdrawn.contains(.genericSegmentation) }

    /// Stops using `offload` on this worker, once.
    @inline(never)
    func withdraw(_ offload: Offloads) {
        guard !withdrawn.contains(offload) else { return }
        withdrawn.insert(offload)
        counters.add(index)
        report(offload)
    }
}
