// The exposition from a statistics reading: Prometheus names, labels and values as `ctl stats`
// has them, a cumulative histogram, series that leave with their peer, and promtool's approval.

import FerryEngine
@testable import FerryMetrics
import FerryWire
import Foundation
import Synchronization
import Testing

@Suite("MetricsExporter")
struct MetricsExporterTests {
    @Test("every ctl stats total is a ferry_<name>_total counter with its value, with HELP and TYPE")
    func totals() throws {
        var s = reading()
        for (k, c) in Counter.allCases.enumerated() { s.counters[c.name] = UInt64(1000 + k) }
        let text = render(s)
        for (k, c) in Counter.allCases.enumerated() {
            let name = "ferry_\(c.name)_total"
            #expect(sample(text, name) == Double(1000 + k), "\(name)")
            #expect(text.contains("# TYPE \(name) counter\n"), "\(name)")
            #expect(text.contains("# HELP \(name) "), "\(name)")
        }
        #expect(sample(text, "ferry_tap_rx_bytes_total") != nil, "byte counters say so in their name")
    }

    @Test("drops: every reason in both directions, zero or not, with the direction's count")
    func drops() throws {
        var s = reading()
        s.drops["unexpected_vni"] = 7
        s.drops["oversize_frame"] = 5
        s.directionDrops = ["ingress": ["unexpected_vni": 7, "oversize_frame": 3], "egress": ["oversize_frame": 2]]
        let text = render(s)
        #expect(sample(text, #"ferry_drops_total{direction="ingress",reason="unexpected_vni"}"#) == 7)
        #expect(sample(text, #"ferry_drops_total{direction="egress",reason="unexpected_vni"}"#) == 0)
        #expect(sample(text, #"ferry_drops_total{direction="ingress",reason="oversize_frame"}"#) == 3)
        #expect(sample(text, #"ferry_drops_total{direction="egress",reason="oversize_frame"}"#) == 2)
        for r in DropReason.allCases {
            for d in ["egress", "ingress"] {
                #expect(sample(text, "ferry_drops_total{direction=\"\(d)\",reason=\"\(r.name)\"}") != nil, "\(d) \(r)")
            }
        }
    }

    @Test("peers, workers and the gauges carry ctl stats' figures under their labels")
    func labelledSeries() throws {
        var s = reading()
        s.peers = [peer("10.0.0.2", tx: 11, txBytes: 1100, rx: 12, rxBytes: 1200),
                   peer("fd00::3", learned: true, tx: 1, txBytes: 2, rx: 3, rxBytes: 4),
                   peer("10.0.0.9", learned: true, retired: true)]
        s.workers = [worker(rx: 5, tx: 6, sent: 7, received: 8), worker(rx: 50, tx: 60, sent: 70, received: 80)]
        s.fdbEntries = 42
        s.underlayMTU = 1500
        let text = render(s)
        #expect(sample(text, #"ferry_peer_tx_packets_total{peer="10.0.0.2"}"#) == 11)
        #expect(sample(text, #"ferry_peer_tx_bytes_total{peer="10.0.0.2"}"#) == 1100)
        #expect(sample(text, #"ferry_peer_rx_packets_total{peer="10.0.0.2"}"#) == 12)
        #expect(sample(text, #"ferry_peer_rx_bytes_total{peer="10.0.0.2"}"#) == 1200)
        #expect(sample(text, #"ferry_peer_rx_bytes_total{peer="fd00::3"}"#) == 4)
        #expect(sample(text, #"ferry_worker_tap_rx_frames_total{worker="1"}"#) == 50)
        #expect(sample(text, #"ferry_worker_tap_tx_frames_total{worker="0"}"#) == 6)
        #expect(sample(text, #"ferry_worker_sent_packets_total{worker="1"}"#) == 70)
        #expect(sample(text, #"ferry_worker_received_packets_total{worker="0"}"#) == 8)
        #expect(sample(text, #"ferry_peers{state="configured"}"#) == 1)
        #expect(sample(text, #"ferry_peers{state="learned"}"#) == 1)
        #expect(sample(text, #"ferry_peers{state="retired"}"#) == 1)
        #expect(sample(text, "ferry_fdb_entries") == 42)
        #expect(sample(text, "ferry_underlay_mtu_bytes") == 1500)
        #expect(text.contains("# TYPE ferry_peers gauge\n") && text.contains("# TYPE ferry_fdb_entries gauge\n"))
    }

    @Test("the batch-size histogram: cumulative buckets per direction and worker, +Inf the batches, sum the frames")
    func histogram() throws {
        var s = reading()
        var w = worker()
        // 3 batches of 1, 4 of 3 or 4 (le 4), 1 of 600 (above 512).
        var counts = Array(repeating: UInt64(0), count: BatchSizeBuckets.count + 1)
        counts[0] = 3; counts[2] = 4; counts[BatchSizeBuckets.count] = 1
        w.egressBatches = .init(counts: counts, frames: 3 + 14 + 600)
        w.ingressBatches = .init(counts: Array(repeating: 0, count: BatchSizeBuckets.count + 1), frames: 0)
        s.workers = [w]
        let text = render(s)
        let labels = #"direction="egress",worker="0""#
        let expected: [(String, Double)] = [("1", 3), ("2", 3), ("4", 7), ("8", 7), ("512", 7), ("+Inf", 8)]
        for (le, n) in expected {
            #expect(sample(text, "ferry_batch_size_frames_bucket{\(labels),le=\"\(le)\"}") == n, "le \(le)")
        }
        #expect(sample(text, "ferry_batch_size_frames_sum{\(labels)}") == 617)
        #expect(sample(text, "ferry_batch_size_frames_count{\(labels)}") == 8)
        #expect(sample(text, #"ferry_batch_size_frames_count{direction="ingress",worker="0"}"#) == 0)
        #expect(text.contains("# TYPE ferry_batch_size_frames histogram\n"))
    }

    @Test("a peer gone from the reading is gone from the next exposition; a counter follows the reading down too")
    func seriesFollowTheReading() throws {
        let current = Mutex(reading())
        current.withLock { $0.peers = [peer("10.0.0.2", tx: 9), peer("10.0.0.3", tx: 4)] }
        let exporter = MetricsExporter { current.withLock { $0 } }
        var text = String(decoding: exporter.render(), as: UTF8.self)
        #expect(sample(text, #"ferry_peer_tx_packets_total{peer="10.0.0.3"}"#) == 4)
        current.withLock { $0.peers = [peer("10.0.0.2", tx: 2)] }
        text = String(decoding: exporter.render(), as: UTF8.self)
        #expect(!text.contains("10.0.0.3"))
        #expect(sample(text, #"ferry_peer_tx_packets_total{peer="10.0.0.2"}"#) == 2, "the reading, not a running sum")
    }

    @Test("promtool check metrics passes the exposition of a busy reading")
    func promtoolApproves() throws {
        var s = reading()
        for c in Counter.allCases { s.counters[c.name] = 123_456_789_012 }
        s.drops["bad_udp_checksum"] = 3
        s.directionDrops = ["ingress": ["bad_udp_checksum": 3], "egress": [:]]
        s.peers = [peer("10.0.0.2", tx: 1), peer("fd00::2", learned: true, tx: 2), peer("10.0.0.4", learned: true, retired: true)]
        var w = worker(rx: 1, tx: 2, sent: 3, received: 4)
        w.egressBatches = .init(counts: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], frames: 99_999)
        w.ingressBatches = .init(counts: Array(repeating: 1, count: 11), frames: 2000)
        s.workers = [w, w]
        s.underlayMTU = 9000
        let text = render(s)
        let result = try promtool(text)
        #expect(result.status == 0, "promtool check metrics: \(result.output)\n\(text)")
    }

    /// With `--etcd`, membership's figures: whether etcd answers, hosts, revision, counts.
    @Test("membership's figures: etcd reachable or not, hosts, revision, registrations, re-listings, outages")
    func membershipFigures() throws {
        let figures = EngineMutex(MembershipFigures(reachable: true, hosts: 4, revision: 17, registrations: 1, relists: 0, outages: 0))
        let exporter = MetricsExporter(statistics: { reading() }, membership: { figures.withLock { $0 } })
        var text = String(decoding: exporter.render(), as: UTF8.self)
        #expect(sample(text, "ferry_etcd_reachable") == 1 && sample(text, "ferry_membership_hosts") == 4)
        #expect(sample(text, "ferry_etcd_revision") == 17 && sample(text, "ferry_membership_registrations_total") == 1)
        figures.withLock { $0 = MembershipFigures(reachable: false, hosts: 3, revision: 17, registrations: 2, relists: 1, outages: 1) }
        text = String(decoding: exporter.render(), as: UTF8.self)
        #expect(sample(text, "ferry_etcd_reachable") == 0 && sample(text, "ferry_etcd_outages_total") == 1)
        #expect(sample(text, "ferry_membership_relists_total") == 1 && sample(text, "ferry_membership_registrations_total") == 2)
        let result = try promtool(text)
        #expect(result.status == 0, "promtool check metrics: \(result.output)\n\(text)")
        // Without --etcd, none of them.
        #expect(!render(reading()).contains("ferry_etcd_"))
    }

    // MARK: - Helpers

    func reading() -> Statistics {
        Statistics(counters: Dictionary(uniqueKeysWithValues: Counter.allCases.map { ($0.name, 0) }),
                   drops: Dictionary(uniqueKeysWithValues: DropReason.allCases.map { ($0.name, 0) }),
                   peers: [], fdbEntries: 0, workers: [], underlayMTU: nil, directionDrops: [:])
    }

    func peer(_ address: String, learned: Bool = false, retired: Bool = false, tx: UInt64 = 0, txBytes: UInt64 = 0,
              rx: UInt64 = 0, rxBytes: UInt64 = 0) -> Statistics.PeerStatistics {
        .init(address: address, learned: learned, retired: retired, txPackets: tx, txBytes: txBytes, rxPackets: rx,
              rxBytes: rxBytes, linkPath: nil)
    }

    func worker(rx: UInt64 = 0, tx: UInt64 = 0, sent: UInt64 = 0, received: UInt64 = 0) -> Statistics.WorkerStatistics {
        .init(tapRxFrames: rx, tapTxFrames: tx, sentPackets: sent, receivedPackets: received)
    }

    func render(_ s: Statistics) -> String {
        String(decoding: MetricsExporter { s }.render(), as: UTF8.self)
    }
}

/// The value of the sample `series` (a name with its labels, as written) in an exposition.
func sample(_ text: String, _ series: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

/// `promtool check metrics` over `text`: its exit status and what it printed.
func promtool(_ text: String) throws -> (status: Int32, output: String) {
    guard let path = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first(where: FileManager.default.isExecutableFile) else {
        Issue.record("promtool is missing: install Debian's prometheus package (tools/setup does)")
        return (-1, "")
    }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = ["check", "metrics"]
    let input = Pipe(), output = Pipe()
    p.standardInput = input
    p.standardOutput = output
    p.standardError = output
    try p.run()
    input.fileHandleForWriting.write(Data(text.utf8))
    try input.fileHandleForWriting.close()
    let printed = output.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: printed, as: UTF8.self))
}
