import FerryEngine

/// The workers' batch sizes as one Prometheus histogram family,
/// `ferry_batch_size_frames{direction, worker}`, written from the snapshot's bucket counts
/// (cumulative `le` buckets 1, 2, 4, …, 512 and +Inf, `_sum` the frames, `_count` the batches).
enum BatchHistogramText {
    static let name = "ferry_batch_size_frames"

    static func write(_ workers: [Statistics.WorkerStatistics], into out: inout [UInt8]) {
        let rows = workers.enumerated().flatMap { w, k in
            [(CounterDirection.egress, w, k.egressBatches), (CounterDirection.ingress, w, k.ingressBatches)]
        }.compactMap { direction, worker, sizes in sizes.map { (direction, worker, $0) } }
        guard !rows.isEmpty else { return }
        var text = "# HELP \(name) \(MetricsHelp.text(name))\n# TYPE \(name) histogram\n"
        for (direction, worker, sizes) in rows {
            let labels = "direction=\"\(direction.rawValue)\",worker=\"\(worker)\""
            var cumulative: UInt64 = 0
            for (k, bound) in BatchSizeBuckets.bounds.enumerated() {
                cumulative &+= k < sizes.counts.count ? sizes.counts[k] : 0
                text += "\(name)_bucket{\(labels),le=\"\(bound)\"} \(cumulative)\n"
            }
            text += "\(name)_bucket{\(labels),le=\"+Inf\"} \(sizes.batches)\n"
            text += "\(name)_sum{\(labels)} \(sizes.frames)\n"
            text += "\(name)_count{\(labels)} \(sizes.batches)\n"
        }
        out.append(contentsOf: text.utf8)
    }
}
