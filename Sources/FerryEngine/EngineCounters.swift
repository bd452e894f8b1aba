import FerryWire

/// The counters one worker thread keeps: totals, one per drop reason, four per peer. Sums
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

/// Where each counter lives in a `CounterBlock`.
public struct CounterLayout: Sendable {
    public let maximumPeers: Int
    /// Offsets computed once: `allCases` builds an array, not for a per-packet path.
    @usableFromInline let dropBase: Int
    @usableFromInline let peerBase: Int
    public let size: Int

    public init(maximumPeers: Int) {
        self.maximumPeers = maximumPeers
        dropBase = Counter.allCases.count
        peerBase = dropBase + DropReason.allCases.count
        size = peerBase + 4 * maximumPeers
    }

    // Wrapping arithmetic: every index is below `size` by construction (a peer slot is below
    // `maximumPeers`), and these run for every packet.
    @inlinable public func index(_ c: Counter) -> Int { c.rawValue }
    @inlinable public func index(_ r: DropReason) -> Int { dropBase &+ Int(r.rawValue) }
    @inlinable public func index(peer: Int, _ c: PeerCounter) -> Int { peerBase &+ 4 &* peer &+ c.rawValue }
}
