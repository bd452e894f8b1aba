import FerryEngine

/// `ferry ctl stats`'s batch lines: per worker and direction, the batch sizes (from the
/// batch-size buckets `/metrics` exports, so "≤ 8" is the bucket's bound) and the batch times
/// (HdrHistogram's, from the end of the receive call to the end of the sends).
func renderBatchTimings(_ s: Statistics) -> String {
    var rows: [String] = []
    for (w, k) in s.workers.enumerated() {
        for (direction, sizes, times) in [("egress", k.egressBatches, k.egressBatchTimes), ("ingress", k.ingressBatches, k.ingressBatchTimes)] {
            guard let sizes, sizes.batches > 0 else { continue }
            var line = "  " + pad("\(w) \(direction)", 11) + pad(String(sizes.batches), 11, left: true)
            line += "   size p50 " + pad(bound(sizes.percentile(50)), 5) + " p99 " + pad(bound(sizes.percentile(99)), 5)
                + " max " + pad(bound(sizes.percentile(100)), 5)
            if let times {
                line += "   time p50 " + pad(duration(times.p50), 9) + " p99 " + pad(duration(times.p99), 9)
                    + " max " + duration(times.maximum)
            }
            rows.append(line)
        }
    }
    guard !rows.isEmpty else { return "" }
    var out = "\nbatches        batches   sizes in frames (bucket bounds)   times from receive to the end of the sends\n"
    out += rows.joined(separator: "\n") + "\n"
    if s.workers.contains(where: { $0.batchTimesCurrent == false }) {
        out += "  (a worker did not reach a batch boundary in time: its latest batches count in the next reading)\n"
    }
    return out
}

private func bound(_ frames: Int?) -> String {
    guard let frames else { return "-" }
    return frames == Int.max ? ">\(BatchSizeBuckets.bounds.last!)" : "≤\(frames)"
}

/// Nanoseconds as µs or ms, three significant digits at most.
func duration(_ nanoseconds: UInt64) -> String {
    let µs = Double(nanoseconds) / 1000
    if µs < 1000 { return µs < 10 ? "\((µs * 10).rounded() / 10) µs" : "\(Int(µs.rounded())) µs" }
    let ms = µs / 1000
    return ms < 10 ? "\((ms * 100).rounded() / 100) ms" : ms < 1000 ? "\((ms * 10).rounded() / 10) ms" : "\(Int(ms.rounded())) ms"
}
