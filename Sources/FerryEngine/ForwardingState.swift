import Atomics
import FerryLinux
import FerryWire
import Synchronization

/// What an engine's workers share: the peers, the forwarding table, and every worker's
/// counters. Each worker moves its own TAP queue and sockets with its own buffers; these are
/// the only things they have in common. The table is locked once per batch; peers are read
/// without a lock; counters have one writer each and are summed when read (`statistics()`).
public final class ForwardingState: Sendable {
    public let configuration: EngineConfiguration
    public let limits: DataPathLimits
    /// The underlay MTU in use now (`limits.underlayMTU` is the one at start).
    public let underlayMTU: UnderlayMTU
    /// How many workers write outer headers (each peer holds one template per worker).
    public let workers: Int
    public let peers: PeerTable
    public let fdb: EngineMutex<ForwardingTable>
    public let layout: CounterLayout
    /// Monotonic seconds: the forwarding table's and the peers' clock.
    public let clock: @Sendable () -> Int64
    /// Whether `clock` is CLOCK_MONOTONIC's seconds (none was given): a worker then takes its
    /// seconds from the nanoseconds it reads to time a batch, and reads the clock no more often.
    public let clockIsMonotonic: Bool
    /// Each worker's batch times, by index (`BatchTimings`).
    public let batchTimings: [BatchTimings]
    /// Each worker's egress and ingress counters, registered as the workers are made, and the
    /// shared block (worker -1, no direction).
    let counterBlocks: EngineMutex<[(worker: Int, direction: CounterDirection?, block: CounterBlock)]>
    /// Counters of what happens outside the workers' steps (peers retired by ageing), written
    /// under `lastPeerAgeing`'s lock.
    let sharedCounters: CounterBlock
    /// The second in which learned peers were last aged; its lock is held while they are.
    let lastPeerAgeing = EngineMutex<Int64>(.min)
    /// Seconds before a learned MAC is forgotten and a learned peer retired: the configuration's
    /// at start, changed by `setAgeing` (`ForwardingState+Changes.swift`).
    let ageing: ManagedAtomic<Int64>
    /// Held while peers are added or removed and their forwarding entries cleared, so that
    /// changes from the control socket, a reload and the settling thread come one at a time.
    let changing = EngineMutex<Void>(())
    /// The captures attached (`ferry run --capture`, `ferry ctl capture`), which the workers
    /// pick up at their next step.
    public let captures: CaptureHub

    public init(configuration: EngineConfiguration, limits: DataPathLimits? = nil, workers: Int = 1,
                clock: (@Sendable () -> Int64)? = nil) throws(TunnelOptionsError) {
        precondition(workers >= 1)
        self.configuration = configuration
        let limits = limits ?? DataPathLimits(configuration: configuration)
        self.limits = limits
        underlayMTU = UnderlayMTU(limits.underlayMTU)
        self.workers = workers
        self.clock = clock ?? ForwardingState.monotonicSeconds
        clockIsMonotonic = clock == nil
        batchTimings = (0..<workers).map { _ in BatchTimings() }
        ageing = ManagedAtomic(configuration.ageingSeconds)
        layout = CounterLayout(maximumPeers: configuration.maximumPeers)
        peers = PeerTable(capacity: configuration.maximumPeers, workers: workers)
        captures = CaptureHub(workers: workers)
        let shared = CounterBlock(count: layout.size)
        sharedCounters = shared
        counterBlocks = EngineMutex([(-1, nil, shared)])
        var table = ForwardingTable(capacity: configuration.fdbCapacity, ageingSeconds: configuration.ageingSeconds,
                                    peers: configuration.maximumPeers, macsPerPeer: configuration.macsPerPeer ?? .max)
        for address in configuration.peers where peers.index(of: address) == nil {
            let options = try configuration.tunnelOptions(remote: address, localMAC: limits.localMAC)
            peers.add(Peer(options: options, isLearned: false, workers: workers))
        }
        for entry in configuration.staticEntries {
            if let p = peers.index(of: entry.peer) { table.addStatic(entry.mac, peer: p) }
        }
        fdb = EngineMutex(table)
    }

    public static func monotonicSeconds() -> Int64 { Scheduling.monotonicSeconds() }

    /// Accept-any mode's admission rule: whether `source`, not a peer yet, may become one
    /// (inside one of `--accept-cidr`'s prefixes, or any source without them). The packet path
    /// asks only for sources that are not peers.
    public func admits(_ source: IPAddress) -> Bool {
        let prefixes = configuration.acceptPrefixes
        guard !prefixes.isEmpty else { return true }
        for prefix in prefixes where prefix.contains(source) { return true }
        return false
    }

    /// The outer headers for a peer at `remote`, as every peer of this engine has them.
    public func tunnelOptions(remote: IPAddress) throws(TunnelOptionsError) -> TunnelOptions {
        try configuration.tunnelOptions(remote: remote, localMAC: limits.localMAC)
    }

    /// A new block of counters for worker `worker`'s `direction` (nil: not a worker's step).
    func makeCounters(worker: Int, direction: CounterDirection?) -> CounterBlock {
        let block = CounterBlock(count: layout.size)
        counterBlocks.withLock { $0.append((worker, direction, block)) }
        return block
    }

    /// Peer slot `p`'s counters now, summed over the workers, in `PeerCounter` order.
    func peerCounters(_ p: Int) -> [UInt64] {
        let blocks = counterBlocks.withLock { $0 }.map(\.block)
        return PeerCounter.allCases.map { c in blocks.reduce(0) { $0 &+ $1.value(layout.index(peer: p, c)) } }
    }

    /// Every counter block, each read once, at one go: totals and per-worker (and per-direction)
    /// figures taken from it add up, however busy the workers are meanwhile. `read`'s nil
    /// worker or direction means all of them.
    func counterSnapshot() -> (workers: Int,
                               read: (_ index: Int, _ worker: Int?, _ direction: CounterDirection?) -> UInt64) {
        let blocks = counterBlocks.withLock { $0 }
        let values = blocks.map { entry in
            (worker: entry.worker, direction: entry.direction, values: (0..<layout.size).map { entry.block.value($0) })
        }
        return (workers, { index, worker, direction in
            values.reduce(0) {
                (worker == nil || $1.worker == worker) && (direction == nil || $1.direction == direction) ? $0 &+ $1.values[index] : $0
            }
        })
    }

    /// Retires learned peers silent for the ageing time: floods stop going to them (what the
    /// forwarding table held for them has aged out with them), and their slots may go to new
    /// peers when the table is full. A packet from one before then brings it back. Does
    /// something once a second at most, and then also frees the peers that left their slots
    /// and that no worker can hold any more; the engine calls it between a worker's steps,
    /// and any thread may (peers are read under the table's lock, not borrowed).
    public func agePeers() {
        guard configuration.acceptAnyPeer else { return }
        let now = clock()
        // The lock makes one caller at a time the shared counters' one writer.
        lastPeerAgeing.withLock { last in
            guard last != now else { return }
            last = now
            var retired = 0
            for (p, peer) in peers.all.enumerated()
            where peer.isLearned && peer.isActive && peer.silence(at: now) >= ageingSeconds {
                if peers.retire(p, now: now, ageing: ageingSeconds) { retired += 1 }
            }
            if retired > 0 { sharedCounters.add(layout.index(.peersRetired), UInt64(retired)) }
            peers.reclaim()
        }
    }
}
