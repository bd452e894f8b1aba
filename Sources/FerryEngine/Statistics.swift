import FerryWire

/// A reading of every counter, summed over the worker threads: what `ferry ctl stats` shows
/// and the exit summary logs.
public struct Statistics: Codable, Sendable, Equatable {
    public struct PeerStatistics: Codable, Sendable, Equatable {
        public var address: String
        public var learned: Bool
        /// A learned peer silent for the ageing time: no floods go to it. (Optional, so that a
        /// newer `ferry ctl` reads what an older Ferry answers.)
        public var retired: Bool?
        public var txPackets: UInt64
        public var txBytes: UInt64
        public var rxPackets: UInt64
        public var rxBytes: UInt64
        /// GRE's link path: the device and next-hop MAC this peer's packets go to (absent:
        /// through the IP stack).
        public var linkPath: String?

        public init(address: String, learned: Bool, retired: Bool?, txPackets: UInt64, txBytes: UInt64, rxPackets: UInt64,
                    rxBytes: UInt64, linkPath: String?) {
            self.address = address
            self.learned = learned
            self.retired = retired
            self.txPackets = txPackets
            self.txBytes = txBytes
            self.rxPackets = rxPackets
            self.rxBytes = rxBytes
            self.linkPath = linkPath
        }
    }

    /// What one worker moved: how evenly the flows spread over the TAP queues and sockets.
    public struct WorkerStatistics: Codable, Sendable, Equatable {
        public var tapRxFrames: UInt64
        public var tapTxFrames: UInt64
        public var sentPackets: UInt64
        public var receivedPackets: UInt64
        /// The sizes of its egress batches (frames read from the TAP at once) and ingress ones
        /// (packets received at once). Optional, so that a newer `ferry ctl` reads what an older
        /// Ferry answers.
        public var egressBatches: BatchSizes?
        public var ingressBatches: BatchSizes?
        /// How long its batches took, from the end of the receive call to the end of the sends
        /// (`BatchTimings`); nil before the first batch, and in the readings that leave them
        /// out (`statistics(includingBatchTimes:)`).
        public var egressBatchTimes: BatchTimes?
        public var ingressBatchTimes: BatchTimes?
        /// With a reading that waited for the workers (`batchTimesWait`), false if this worker
        /// did not hand over its latest batch times in time (they count in the next); nil for a
        /// reading that did not wait (its times are those of the last hand-over, about a
        /// two seconds old at most).
        public var batchTimesCurrent: Bool?

        public init(tapRxFrames: UInt64, tapTxFrames: UInt64, sentPackets: UInt64, receivedPackets: UInt64,
                    egressBatches: BatchSizes? = nil, ingressBatches: BatchSizes? = nil) {
            self.tapRxFrames = tapRxFrames
            self.tapTxFrames = tapTxFrames
            self.sentPackets = sentPackets
            self.receivedPackets = receivedPackets
            self.egressBatches = egressBatches
            self.ingressBatches = ingressBatches
        }
    }

    /// A step's batch times in nanoseconds: p50 and p99 as HdrHistogram gives them (within 1 %),
    /// and the longest.
    public struct BatchTimes: Codable, Sendable, Equatable {
        public var batches: UInt64
        public var p50: UInt64
        public var p99: UInt64
        public var maximum: UInt64

        public init(batches: UInt64, p50: UInt64, p99: UInt64, maximum: UInt64) {
            self.batches = batches
            self.p50 = p50
            self.p99 = p99
            self.maximum = maximum
        }
    }

    /// A step's batches by size (`BatchSizeBuckets`): `counts[k]` batches of more than
    /// 2^(k-1) and at most 2^k frames, the last count those above the largest bound (not
    /// cumulative), and the frames of all of them.
    public struct BatchSizes: Codable, Sendable, Equatable {
        public var counts: [UInt64]
        public var frames: UInt64
        public var batches: UInt64 { counts.reduce(0, &+) }

        /// The size at or under which `percent` of the batches were, as the buckets tell it:
        /// the upper bound of the bucket the percentile falls in (nil: no batches; beyond the
        /// largest bound, `Int.max`). 100 gives the largest batch's bucket.
        public func percentile(_ percent: Double) -> Int? {
            let total = batches
            guard total > 0 else { return nil }
            let wanted = max(1, UInt64((percent / 100 * Double(total)).rounded(.up)))
            var seen: UInt64 = 0
            for (k, n) in counts.enumerated() {
                seen &+= n
                if seen >= wanted { return k < BatchSizeBuckets.count ? BatchSizeBuckets.bounds[k] : Int.max }
            }
            return Int.max
        }

        public init(counts: [UInt64], frames: UInt64) {
            self.counts = counts
            self.frames = frames
        }
    }

    public var counters: [String: UInt64]
    /// Every drop reason, zero or not, so that a script can rely on the names.
    public var drops: [String: UInt64]
    public var peers: [PeerStatistics]
    public var fdbEntries: Int
    public var workers: [WorkerStatistics]
    /// The underlay MTU in use now (a gauge: followed when the interface's changes, unless
    /// configured). Optional, so that a newer `ferry ctl` reads what an older Ferry answers.
    public var underlayMTU: Int?
    /// The routes Ferry's set-up installed on the host (`setup: true`), as `ip route` writes
    /// them; absent without set-up. Filled in by the command that runs the set-up, not the engine.
    public var hostRoutes: [String]?

    /// The drops counted on each direction's step (`CounterDirection`'s names), the reasons
    /// that counted something only: the two add up to `drops`. Optional, so that a newer
    /// `ferry ctl` reads what an older Ferry answers.
    public var directionDrops: [String: [String: UInt64]]?

    public init(counters: [String: UInt64], drops: [String: UInt64], peers: [PeerStatistics], fdbEntries: Int,
                workers: [WorkerStatistics], underlayMTU: Int?, directionDrops: [String: [String: UInt64]]?) {
        self.counters = counters
        self.drops = drops
        self.peers = peers
        self.fdbEntries = fdbEntries
        self.workers = workers
        self.underlayMTU = underlayMTU
        self.directionDrops = directionDrops
    }

    public var totalDrops: UInt64 { drops.values.reduce(0, +) }
    public func counter(_ c: Counter) -> UInt64 { counters[c.name] ?? 0 }
    public func drops(_ r: DropReason) -> UInt64 { drops[r.name] ?? 0 }
}

/// One forwarding-table entry as `ferry ctl fdb` shows it.
public struct FDBEntry: Codable, Sendable, Equatable {
    public var mac: String
    public var peer: String
    public var ageSeconds: Int64
    public var isStatic: Bool
}

extension ForwardingState {
    /// Every counter now: totals, per drop reason, per peer and per worker; with
    /// `includingBatchTimes`, each worker's batch times too, as the workers last handed them
    /// over: the engine asks them once a second (`BatchTimings.handOver`), and a reading waits
    /// `batchTimesWait` milliseconds at most for a newer hand-over (none by default: a control
    /// client, or a flood of them, must never wait on the workers).
    public func statistics(includingBatchTimes: Bool = false, batchTimesWait: Int = 0) -> Statistics {
        // One reading of every block: the per-worker figures add up to the totals.
        let snapshot = counterSnapshot()
        func sum(_ index: Int) -> UInt64 { snapshot.read(index, nil, nil) }
        var counters: [String: UInt64] = [:]
        for c in Counter.allCases { counters[c.name] = sum(layout.index(c)) }
        var drops: [String: UInt64] = [:]
        for r in DropReason.allCases { drops[r.name] = sum(layout.index(r)) }
        // Removed peers' stand-ins are no peers.
        let peerList = peers.all.enumerated().filter { !$0.element.isVacant }.map { p, peer in
            // A slot taken over from a retired peer goes on counting: from where it was.
            func since(_ c: PeerCounter) -> UInt64 { sum(layout.index(peer: p, c)) &- peer.counterBaseline[c.rawValue] }
            return Statistics.PeerStatistics(address: peer.address.description, learned: peer.isLearned, retired: !peer.isActive,
                                             txPackets: since(.txPackets), txBytes: since(.txBytes),
                                             rxPackets: since(.rxPackets), rxBytes: since(.rxBytes),
                                             linkPath: peer.linkPath?.description)
        }
        let workers = (0..<snapshot.workers).map { w in
            func batches(_ direction: CounterDirection) -> Statistics.BatchSizes {
                Statistics.BatchSizes(counts: (0...BatchSizeBuckets.count).map { snapshot.read(layout.index(batchSlot: $0), w, direction) },
                                      frames: snapshot.read(layout.batchFramesIndex, w, direction))
            }
            return Statistics.WorkerStatistics(tapRxFrames: snapshot.read(layout.index(.tapReceivedFrames), w, nil),
                                               tapTxFrames: snapshot.read(layout.index(.tapWrittenFrames), w, nil),
                                               sentPackets: snapshot.read(layout.index(.sentPackets), w, nil),
                                               receivedPackets: snapshot.read(layout.index(.receivedPackets), w, nil),
                                               egressBatches: batches(.egress), ingressBatches: batches(.ingress))
        }
        let readings = includingBatchTimes ? BatchTimings.readings(batchTimings, timeoutMilliseconds: batchTimesWait) : []
        let timedWorkers = workers.enumerated().map { w, statistics in
            guard w < readings.count else { return statistics }
            var s = statistics
            let reading = readings[w]
            s.egressBatchTimes = Statistics.BatchTimes(reading.egress)
            s.ingressBatchTimes = Statistics.BatchTimes(reading.ingress)
            // Only a reading that waited for the workers can say whether they answered.
            s.batchTimesCurrent = batchTimesWait > 0 ? reading.current : nil
            return s
        }
        var directionDrops: [String: [String: UInt64]] = [:]
        for direction in CounterDirection.allCases {
            var counted: [String: UInt64] = [:]
            for r in DropReason.allCases {
                let n = snapshot.read(layout.index(r), nil, direction)
                if n > 0 { counted[r.name] = n }
            }
            directionDrops[direction.rawValue] = counted
        }
        return Statistics(counters: counters, drops: drops, peers: peerList, fdbEntries: fdb.withLock { $0.count },
                          workers: timedWorkers, underlayMTU: underlayMTU.load(), directionDrops: directionDrops)
    }

    /// The forwarding table's live entries, by MAC: `forwardingSnapshot()`, every entry at once
    /// (read a piece per lock hold; see there for how far it is one moment's).
    public func forwardingEntries() -> [FDBEntry] { forwardingSnapshot().entries() }
}
