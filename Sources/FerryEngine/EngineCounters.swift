import FerryWire

/// The counters one worker thread keeps: totals, one per drop reason, four per peer, and its
/// batch sizes (`BatchSizeBuckets`). Sums
/// over threads are what `ferry ctl stats` shows.
public enum Counter: Int, CaseIterable, Sendable {
    case tapReceivedFrames, tapReceivedBytes
    case tapWrittenFrames, tapWrittenBytes
    case unicastFrames, floodedFrames
    case sentPackets, sentBytes
    case receivedPackets, receivedBytes
    case icmpErrorsSent
    case fdbLearned, fdbMoved, fdbFull, fdbExpired, fdbLocalMoved
    /// MACs not learned behind a peer: it holds `--max-macs-per-peer` already, or the MAC is a
    /// local bridge port's. (The frames are delivered all the same.)
    case fdbPeerLimit, fdbLocalRefused
    case peersLearned, peersRetired
    case superFrames, superFrameSegments, coalescedSegments
    case linkSentPackets
    /// UDP sends the kernel segments (GSO), each several packets; UDP receives that held
    /// several datagrams (GRO).
    case gsoSends, groReceives
    /// Offloads a worker set aside because the kernel refused them at run time (each time), and
    /// offloads used again once their back-off passed.
    case offloadsWithdrawn, offloadsRetried
    /// Capture records lost: a worker's capture ring was full (the writer behind), or the
    /// sink's write failed (a full disk, a reader gone). Counted by the capture writer.
    case captureDropped, captureWriteFailed
    /// Inner TCP/UDP segments whose checksum their sender left partial (a virtual underlay's
    /// offload), written to the TAP with NEEDS_CSUM or finished by Ferry.
    case partialChecksums

    public var name: String {
        switch self {
        case .tapReceivedFrames: "tap_rx_frames"
        case .tapReceivedBytes: "tap_rx_bytes"
        case .tapWrittenFrames: "tap_tx_frames"
        case .tapWrittenBytes: "tap_tx_bytes"
        case .unicastFrames: "unicast_frames"
        case .floodedFrames: "flooded_frames"
        case .sentPackets: "sent_packets"
        case .sentBytes: "sent_bytes"
        case .receivedPackets: "received_packets"
        case .receivedBytes: "received_bytes"
        case .icmpErrorsSent: "icmp_errors_sent"
        case .fdbLearned: "fdb_learned"
        case .fdbMoved: "fdb_moved"
        case .fdbFull: "fdb_full"
        case .fdbExpired: "fdb_expired"
        case .fdbLocalMoved: "fdb_moved_local"
        case .fdbPeerLimit: "fdb_peer_limit"
        case .fdbLocalRefused: "fdb_local_refused"
        case .peersLearned: "peers_learned"
        case .peersRetired: "peers_retired"
        case .superFrames: "tap_super_frames"
        case .superFrameSegments: "tap_super_frame_segments"
        case .coalescedSegments: "coalesced_segments"
        case .linkSentPackets: "link_sent_packets"
        case .gsoSends: "gso_sends"
        case .groReceives: "gro_receives"
        case .offloadsWithdrawn: "offloads_withdrawn"
        case .offloadsRetried: "offloads_retried"
        case .captureDropped: "capture_dropped"
        case .captureWriteFailed: "capture_write_failed"
        case .partialChecksums: "partial_checksums"
        }
    }
}

/// Per-peer counters, four to a peer.
public enum PeerCounter: Int, CaseIterable, Sendable {
    case txPackets, txBytes, rxPackets, rxBytes
}

/// Which of a worker's two steps a counter block counts for (`nil` for blocks outside the
/// workers: the engine's shared counters, the capture writer's).
public enum CounterDirection: String, CaseIterable, Codable, Sendable {
    /// Bridge to tunnel: frames read from the TAP.
    case egress
    /// Tunnel to bridge: packets received from the sockets.
    case ingress
}

/// A step's batch sizes as a histogram with power-of-two bounds: slot `k` counts the batches
/// of more than 2^(k-1) and at most 2^k frames (packets on ingress; a GRO receive is one), the
/// last slot those above the largest bound. Recorded by each step into its own counter block:
/// one bucket and the frame sum, two relaxed adds, no branch but a `min`.
public enum BatchSizeBuckets {
    /// The buckets' upper bounds (`le`): 1, 2, 4, …, 512, the largest batch `--batch` allows.
    public static let bounds: [Int] = (0..<count).map { 1 << $0 }
    public static let count = 10

    /// The slot a batch of `frames` (at least 1) goes to: ⌈log2 frames⌉, or `count` above
    /// the largest bound.
    @inlinable @inline(__always)
    public static func slot(frames: Int) -> Int { min(Int.bitWidth &- (frames &- 1).leadingZeroBitCount, count) }
}

/// Where each counter lives in a `CounterBlock`.
public struct CounterLayout: Sendable {
    public let maximumPeers: Int
    /// Offsets computed once: `allCases` builds an array, not for a per-packet path.
    @usableFromInline let dropBase: Int
    @usableFromInline let peerBase: Int
    /// The batch-size buckets (`BatchSizeBuckets.count` and one above the largest bound), then
    /// the sum of the batches' frames.
    @usableFromInline let batchBase: Int
    public let size: Int

    public init(maximumPeers: Int) {
        self.maximumPeers = maximumPeers
        dropBase = Counter.allCases.count
        peerBase = dropBase + DropReason.allCases.count
        batchBase = peerBase + 4 * maximumPeers
        size = batchBase + BatchSizeBuckets.count + 2
    }

    // Wrapping arithmetic: every index is below `size` by construction (a peer slot is below
    // `maximumPeers`), and these run for every packet.
    @inlinable public func index(_ c: Counter) -> Int { c.rawValue }
    @inlinable public func index(_ r: DropReason) -> Int { dropBase &+ Int(r.rawValue) }
    @inlinable public func index(peer: Int, _ c: PeerCounter) -> Int { peerBase &+ 4 &* peer &+ c.rawValue }
    /// Batch-size slot `slot` (`BatchSizeBuckets.slot(frames:)`, at most `BatchSizeBuckets.count`).
    @inlinable public func index(batchSlot slot: Int) -> Int { batchBase &+ slot }
    /// The sum of the frames of every batch counted in the buckets.
    @inlinable public var batchFramesIndex: Int { batchBase &+ BatchSizeBuckets.count &+ 1 }
}
