import FerryWire
import Synchronization

/// What an engine's workers share: the peers, the forwarding table, and every worker's
/// counters. Each worker moves its own TAP queue and sockets with its own buffers; these are
/// the only things they have in common. The table is locked once per batch; peers are read
/// without a lock; counters have one writer each and are summed when read.
public final class ForwardingState: @unchecked Sendable {
    public let configuration: EngineConfiguration
    /// How many workers write outer headers (each peer holds one template per worker).
    public let workers: Int
    public let peers: PeerTable
    public let fdb: Mutex<ForwardingTable>
    public let layout: CounterLayout
    /// Each worker's egress and ingress counters, registered as the workers are made.
    let counterBlocks = Mutex<[(worker: Int, block: CounterBlock)]>([])

    public init(configuration: EngineConfiguration, workers: Int = 1) throws(TunnelOptionsError) {
        precondition(workers >= 1)
        self.configuration = configuration
        self.workers = workers
        layout = CounterLayout(maximumPeers: configuration.maximumPeers)
        peers = PeerTable(capacity: configuration.maximumPeers)
        for address in configuration.peers where peers.index(of: address) == nil {
            peers.add(Peer(options: try configuration.tunnelOptions(remote: address), isLearned: false, workers: workers))
        }
        var table = ForwardingTable(capacity: configuration.fdbCapacity, ageingSeconds: configuration.ageingSeconds)
        for entry in configuration.staticEntries {
            if let p = peers.index(of: entry.peer) { table.addStatic(entry.mac, peer: p) }
        }
        fdb = Mutex(table)
    }

    /// A new block of counters for one of worker `worker`'s directions.
    func makeCounters(worker: Int) -> CounterBlock {
        let block = CounterBlock(count: layout.size)
        counterBlocks.withLock { $0.append((worker, block)) }
        return block
    }

    /// Peer slot `p`'s counters now, summed over the workers, in `PeerCounter` order.
    func peerCounters(_ p: Int) -> [UInt64] {
        let blocks = counterBlocks.withLock { $0 }.map(\.block)
        return PeerCounter.allCases.map { c in blocks.reduce(0) { $0 &+ $1.value(layout.index(peer: p, c)) } }
    }

    /// Every worker's counters, each block read once, at one go: totals and per-worker
    /// figures taken from it add up, however busy the workers are meanwhile.
    func counterSnapshot() -> (workers: Int, read: (_ index: Int, _ worker: Int?) -> UInt64) {
        let blocks = counterBlocks.withLock { $0 }
        let values = blocks.map { entry in (worker: entry.worker, values: (0..<layout.size).map { entry.block.value($0) }) }
        return (workers, { index, worker in
            values.reduce(0) { worker == nil || $1.worker == worker ? $0 &+ $1.values[index] : $0 }
        })
    }
}
