import FerryEngine

/// The Prometheus names of Ferry's counters and the `# HELP` line of every series the exporter
/// writes (`promtool check metrics` wants one for each).
enum MetricsHelp {
    /// `ferry_<ctl stats name>_total`: the name in `ferry ctl stats` is the key to the series.
    static func name(_ c: FerryEngine.Counter) -> String { "ferry_\(c.name)_total" }

    static func text(_ name: String) -> String {
        if let c = FerryEngine.Counter.allCases.first(where: { Self.name($0) == name }) { return text(c) }
        return switch name {
        case "ferry_drops_total": "Packets and frames dropped, by the worker step that dropped them and the reason (ferry ctl stats' drops)."
        case "ferry_peer_tx_packets_total": "Tunnel packets sent to the peer."
        case "ferry_peer_tx_bytes_total": "Bytes of the tunnel packets sent to the peer (outer IP packets)."
        case "ferry_peer_rx_packets_total": "Tunnel packets received from the peer."
        case "ferry_peer_rx_bytes_total": "Bytes of the tunnel packets received from the peer (outer IP packets)."
        case "ferry_worker_tap_rx_frames_total": "Frames the worker read from its TAP queue."
        case "ferry_worker_tap_tx_frames_total": "Frames the worker wrote to its TAP queue."
        case "ferry_worker_sent_packets_total": "Tunnel packets the worker sent."
        case "ferry_worker_received_packets_total": "Tunnel packets the worker received."
        case "ferry_peers": "Peers by state: configured, learned (accept-any mode), retired (learned and silent for the ageing time)."
        case "ferry_fdb_entries": "Entries in the forwarding table (learned and static MACs)."
        case "ferry_underlay_mtu_bytes": "The underlay MTU in use."
        case "ferry_etcd_reachable": "1 while etcd answers membership's requests, 0 while it does not (forwarding goes on with the last membership)."
        case "ferry_etcd_revision": "The last etcd revision membership has seen."
        case "ferry_membership_hosts": "Hosts registered in etcd, this one included."
        case "ferry_membership_registrations_total": "Times this host registered in etcd: 1, and one more for each lease that lapsed."
        case "ferry_membership_relists_total": "Full listings of the hosts after the first (after an outage or a compaction)."
        case "ferry_etcd_outages_total": "Times etcd stopped answering membership's requests."
        case BatchHistogramText.name: "Frames read from the TAP at once (egress) and packets received at once (ingress), per worker step."
        default: name
        }
    }

    static func text(_ c: FerryEngine.Counter) -> String {
        switch c {
        case .tapReceivedFrames: "Frames read from the TAP (bridge to tunnel)."
        case .tapReceivedBytes: "Bytes of the frames read from the TAP."
        case .tapWrittenFrames: "Frames written to the TAP (tunnel to bridge)."
        case .tapWrittenBytes: "Bytes of the frames written to the TAP."
        case .unicastFrames: "Frames from the TAP sent to the one peer the forwarding table names."
        case .floodedFrames: "Frames from the TAP flooded to every active peer (unknown, broadcast or multicast destination)."
        case .sentPackets: "Tunnel packets sent to peers."
        case .sentBytes: "Bytes of the tunnel packets sent (outer IP packets)."
        case .receivedPackets: "Tunnel packets received from peers."
        case .receivedBytes: "Bytes of the tunnel packets received (outer IP packets)."
        case .icmpErrorsSent: "ICMP errors (fragmentation needed, packet too big) sent back to the bridge."
        case .fdbLearned: "MACs learned behind a peer."
        case .fdbMoved: "Learned MACs that moved from one peer to another."
        case .fdbFull: "MACs not learned because the forwarding table was full."
        case .fdbExpired: "Learned MACs aged out of the forwarding table."
        case .fdbLocalMoved: "MACs learned behind a peer that turned up on the local bridge."
        case .fdbPeerLimit: "MACs not learned because their peer holds --max-macs-per-peer already."
        case .fdbLocalRefused: "MACs not learned behind a peer because they are a local bridge port's."
        case .peersLearned: "Peers learned in accept-any mode."
        case .peersRetired: "Learned peers retired after the ageing time without a packet."
        case .superFrames: "TAP super-frames (TSO/USO) read and cut into segments."
        case .superFrameSegments: "Segments cut from TAP super-frames."
        case .coalescedSegments: "Received segments joined into super-frames for the TAP."
        case .linkSentPackets: "GRE packets sent on the link path (straight to the underlay device)."
        case .gsoSends: "UDP sends segmented by the kernel (UDP_SEGMENT), each several packets."
        case .groReceives: "UDP receives that held several datagrams (UDP_GRO)."
        case .offloadsWithdrawn: "Offloads set aside because the kernel refused them at run time."
        case .offloadsRetried: "Offloads used again after their back-off."
        case .captureDropped: "Capture records lost because a worker's capture ring was full."
        case .captureWriteFailed: "Capture records lost because the capture sink's write failed."
        case .partialChecksums: "Inner segments whose sender left their checksum partial."
        }
    }
}
