import FerryEngine
import FerryWire
import Prometheus

/// Ferry's counters in Prometheus's text format, read from the engine's statistics at each
/// scrape (Prometheus pulls): what `ferry ctl stats` shows, under Prometheus names.
///
/// - every total of `ctl stats` as `ferry_<name>_total` (`ferry_tap_rx_frames_total`,
///   `ferry_sent_bytes_total`, …);
/// - drops as `ferry_drops_total{direction, reason}`, every reason, zero or not;
/// - per peer `ferry_peer_{tx,rx}_{packets,bytes}_total{peer}`, per worker
///   `ferry_worker_…_total{worker}`;
/// - gauges `ferry_peers{state}`, `ferry_fdb_entries`, `ferry_underlay_mtu_bytes`;
/// - the histogram `ferry_batch_size_frames{direction, worker}` of the workers' batch sizes.
///
/// Counters and gauges are swift-prometheus's, kept in one `PrometheusCollectorRegistry` and
/// set from the snapshot before each emission (a counter reset and incremented to the
/// snapshot's value: the exposition shows exactly what the engine counted, and nothing is
/// pushed per packet). Series that left the snapshot (a removed peer) are unregistered. The
/// histogram is written here: swift-prometheus's `Histogram` only takes observations one by
/// one (under a lock, each walking the buckets), while the workers count batches into
/// power-of-two buckets themselves and the snapshot holds the counts.
///
/// Thread-safe: one rendering at a time.
public final class MetricsExporter: Sendable {
    /// Where the counters come from (`Engine.statistics`, or a test's).
    let statistics: @Sendable () -> Statistics
    let registry = PrometheusCollectorRegistry()
    private let series = EngineMutex(Series())

    /// The series registered so far, by name and labels.
    private struct Series {
        var counters: [Key: Prometheus.Counter] = [:]
        var gauges: [Key: Prometheus.Gauge] = [:]
    }

    private struct Key: Hashable {
        var name: String
        var labels: [String]
    }

    /// Membership's figures, with `--etcd` (nil without).
    let membership: (@Sendable () -> MembershipFigures)?

    public init(statistics: @escaping @Sendable () -> Statistics, membership: (@Sendable () -> MembershipFigures)? = nil) {
        self.statistics = statistics
        self.membership = membership
    }

    /// `name` whole (its unit and `_total` are in it already), with its help.
    static func descriptor(_ name: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: MetricsHelp.text(name))
    }

    /// The exposition now (`text/plain; version=0.0.4`).
    public func render() -> [UInt8] {
        let s = statistics()
        let m = membership?()
        return series.withLock { series in
            var seenCounters = Set<Key>(), seenGauges = Set<Key>()
            func counter(_ name: String, _ labels: [(String, String)], _ value: UInt64) {
                let key = Key(name: name, labels: labels.flatMap { [$0.0, $0.1] })
                seenCounters.insert(key)
                let c = series.counters[key] ?? {
                    let made = registry.makeCounter(descriptor: Self.descriptor(name), labels: labels)
                    series.counters[key] = made
                    return made
                }()
                c.reset()
                c.increment(by: Int64(clamping: value))
            }
            func gauge(_ name: String, _ labels: [(String, String)], _ value: Int) {
                let key = Key(name: name, labels: labels.flatMap { [$0.0, $0.1] })
                seenGauges.insert(key)
                let g = series.gauges[key] ?? {
                    let made = registry.makeGauge(descriptor: Self.descriptor(name), labels: labels)
                    series.gauges[key] = made
                    return made
                }()
                g.set(Int64(value))
            }

            for c in FerryEngine.Counter.allCases { counter(MetricsHelp.name(c), [], s.counter(c)) }
            // Every reason in both directions, zero or not, so that a query can rely on the names.
            for direction in CounterDirection.allCases {
                let counted = s.directionDrops?[direction.rawValue] ?? [:]
                for r in DropReason.allCases {
                    counter("ferry_drops_total", [("direction", direction.rawValue), ("reason", r.name)], counted[r.name] ?? 0)
                }
            }
            var states = ["configured": 0, "learned": 0, "retired": 0]
            for p in s.peers {
                let labels = [("peer", p.address)]
                counter("ferry_peer_tx_packets_total", labels, p.txPackets)
                counter("ferry_peer_tx_bytes_total", labels, p.txBytes)
                counter("ferry_peer_rx_packets_total", labels, p.rxPackets)
                counter("ferry_peer_rx_bytes_total", labels, p.rxBytes)
                states[p.retired == true ? "retired" : p.learned ? "learned" : "configured", default: 0] += 1
            }
            for (w, k) in s.workers.enumerated() {
                let labels = [("worker", String(w))]
                counter("ferry_worker_tap_rx_frames_total", labels, k.tapRxFrames)
                counter("ferry_worker_tap_tx_frames_total", labels, k.tapTxFrames)
                counter("ferry_worker_sent_packets_total", labels, k.sentPackets)
                counter("ferry_worker_received_packets_total", labels, k.receivedPackets)
            }
            for (state, n) in states { gauge("ferry_peers", [("state", state)], n) }
            gauge("ferry_fdb_entries", [], s.fdbEntries)
            if let mtu = s.underlayMTU { gauge("ferry_underlay_mtu_bytes", [], mtu) }
            if let m {
                gauge("ferry_etcd_reachable", [], m.reachable ? 1 : 0)
                gauge("ferry_etcd_revision", [], Int(clamping: m.revision))
                gauge("ferry_membership_hosts", [], m.hosts)
                counter("ferry_membership_registrations_total", [], UInt64(max(0, m.registrations)))
                counter("ferry_membership_relists_total", [], UInt64(max(0, m.relists)))
                counter("ferry_etcd_outages_total", [], UInt64(max(0, m.outages)))
            }

            for (key, c) in series.counters where !seenCounters.contains(key) {
                registry.unregisterCounter(c)
                series.counters[key] = nil
            }
            for (key, g) in series.gauges where !seenGauges.contains(key) {
                registry.unregisterGauge(g)
                series.gauges[key] = nil
            }
            var out = registry.emitToBuffer()
            BatchHistogramText.write(s.workers, into: &out)
            return out
        }
    }
}

/// What `/metrics` shows of membership (`ferry run --etcd`): whether etcd answers, and how the
/// membership has gone. Filled in from the membership agent's status by the command line, so
/// that this module needs neither etcd nor the agent.
public struct MembershipFigures: Sendable, Equatable {
    public var reachable: Bool
    /// Hosts in etcd, this one included.
    public var hosts: Int
    public var revision: Int64
    public var registrations: Int
    public var relists: Int
    public var outages: Int

    public init(reachable: Bool, hosts: Int, revision: Int64, registrations: Int, relists: Int, outages: Int) {
        self.reachable = reachable
        self.hosts = hosts
        self.revision = revision
        self.registrations = registrations
        self.relists = relists
        self.outages = outages
    }
}
