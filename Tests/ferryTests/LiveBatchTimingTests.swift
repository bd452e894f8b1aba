import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// `ferry ctl stats` on a running Ferry: per worker, batch sizes and batch times for both
    /// directions, the same batches counted by both.
    @Suite struct LiveBatchTimingTests {
        struct Times: Decodable {
            var batches: UInt64
            var p50: UInt64
            var p99: UInt64
            var maximum: UInt64
        }

        struct Sizes: Decodable { var counts: [UInt64] }

        struct Worker: Decodable {
            var egressBatches: Sizes?
            var ingressBatches: Sizes?
            var egressBatchTimes: Times?
            var ingressBatchTimes: Times?
            var batchTimesCurrent: Bool?
        }

        struct Reading: Decodable { var workers: [Worker] }

        @Test func ctlStatsShowsBatchTimesPerWorker() throws {
            let live = try LiveLab(tag: "btime", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let tunnel = ["--encap", "vxlan", "--vni", "42"]
            try live.startFerry(on: 0, tunnel: tunnel, extra: ["--workers", "2"])
            try live.startFerry(on: 1, tunnel: tunnel)
            let ping = try Lab.capture(["ip", "netns", "exec", live.container(1).namespace, "ping", "-c", "20", "-i", "0.02",
                                        "-W", "2", live.container(0).address], timeout: 30)
            #expect(ping.status == 0, "\(ping)")
            // The engine takes the workers' batch times once a second; ctl stats never waits.
            Thread.sleep(forTimeInterval: 2.5)

            let reading = try JSONDecoder().decode(Reading.self, from: Data(try live.ctl(0, "stats").utf8))
            #expect(reading.workers.count == 2)
            var egress: UInt64 = 0, ingress: UInt64 = 0
            for w in reading.workers {
                #expect(w.batchTimesCurrent == nil, "ctl stats waited on a worker")
                for (sizes, times) in [(w.egressBatches, w.egressBatchTimes), (w.ingressBatches, w.ingressBatchTimes)] {
                    let batches = sizes?.counts.reduce(0, +) ?? 0
                    guard let times else {
                        #expect(batches == 0, "batches counted by size but not timed")
                        continue
                    }
                    // Both count every batch (a batch between the two readings may add to the times).
                    #expect(times.batches >= batches && times.batches <= batches + 5, "\(times) against \(batches) batches")
                    #expect(times.p50 > 0 && times.p50 <= times.p99 && times.p99 <= times.maximum, "\(times)")
                    #expect(times.maximum < 10_000_000_000, "\(times)")
                }
                egress += w.egressBatchTimes?.batches ?? 0
                ingress += w.ingressBatchTimes?.batches ?? 0
            }
            // 20 echo requests in, 20 replies out (and ARP), each in some batch.
            #expect(egress >= 1 && ingress >= 1 && egress + ingress >= 20, "egress \(egress), ingress \(ingress)")

            let text = try live.ctl(0, "stats", json: false)
            #expect(text.contains("\nbatches ") && text.contains("time p50"), "\(text)")
            print("[live batch timing]\n" + text.split(separator: "\n").filter { $0.contains("batches") || $0.contains("time p50") }
                .joined(separator: "\n"))
        }
    }
}
