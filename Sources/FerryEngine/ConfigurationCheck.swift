import FerryWire

/// A configuration whose options contradict one another, found before anything touches the
/// system. Each description names the options as `ferry run` and its config file spell them and
/// says what would be right, so that a tool can print it as it is.
public enum ConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No peer, and packets from unknown sources are refused: nothing could be forwarded.
    case noPeers
    /// A peer's address is of another IP version than the local one.
    case peerAddressFamily(peer: IPAddress, local: IPAddress)
    /// A peer is this host's own address.
    case peerIsLocal(IPAddress)
    /// VXLAN without a VNI.
    case missingVNI
    /// A GRE key, checksum or sequence option with VXLAN.
    case greOptionsWithVXLAN
    /// A VNI with GRE.
    case vniWithGRE
    /// An outer UDP checksum setting with GRE, which has no UDP.
    case udpChecksumWithGRE
    /// The GRE link path asked for with VXLAN, which always leaves through UDP sockets.
    case grePathWithVXLAN
    /// A static forwarding entry that points at an address which is not a peer.
    case staticEntryNotAPeer(mac: MACAddress, peer: IPAddress)
    /// A TAP segmentation offload (`name`: tso or uso) without the checksum offload.
    case offloadNeedsChecksum(name: String)
    /// gso named in an explicit list, which the tunnel's options rule out.
    case segmentationOffloadUnusable(listed: Offloads, blocker: UDPSegmentationBlocker)
    /// More distinct static MACs than the forwarding table holds.
    case tooManyStaticEntries(count: Int, capacity: Int)
    /// The VXLAN port inside the range outer source ports are taken from: the UDP senders bind
    /// ports of that range, and one on the VXLAN port would take the tunnel's traffic.
    case destinationPortInSourceRange(port: UInt16, range: ClosedRange<UInt16>)
    /// A capture point or filter without a capture file.
    case captureOptionsWithoutCapture
    /// `--accept-cidr` without `--accept-any-peer`: it limits who may become a peer, and
    /// without accept-any nobody does.
    case acceptPrefixWithoutAcceptAny
    /// An `--accept-cidr` prefix of the other IP version than `--local`: no peer could match it.
    case acceptPrefixFamily(prefix: IPPrefix, local: IPAddress)

    public var description: String {
        switch self {
        case .noPeers:
            "give at least one --peer IP (the other hosts' underlay addresses), or --accept-any-peer"
        case .peerAddressFamily(let peer, let local):
            "peer \(peer) and --local \(local) are of different IP versions; give all as IPv4 or all as IPv6"
        case .peerIsLocal(let peer):
            "peer \(peer) is this host's own --local address; give the other hosts' addresses"
        case .missingVNI:
            "VXLAN needs a VNI; add --vni N (0 to \(VXLAN.maximumVNI))"
        case .greOptionsWithVXLAN:
            "--key, --gre-csum and --gre-seq are for GRE; VXLAN takes --vni"
        case .vniWithGRE:
            "--vni is for VXLAN; GRE takes --key"
        case .udpChecksumWithGRE:
            "--udp-csum applies to VXLAN only; GRE has --gre-csum"
        case .grePathWithVXLAN:
            "--gre-path applies to GRE only (VXLAN leaves through UDP sockets); use --encap gre"
        case .staticEntryNotAPeer(let mac, let peer):
            "static entry '\(mac)=\(peer)' names \(peer), which is not a --peer"
        case .offloadNeedsChecksum(let name):
            "--offloads: \(name) needs csum (a TAP hands over super-frames only with checksums left to finish); add csum"
        case .segmentationOffloadUnusable(let listed, let blocker):
            "--offloads \(listed): \(blocker), or leave gso out"
        case .tooManyStaticEntries(let count, let capacity):
            "\(count) static forwarding entries, but the table holds \(capacity); raise --fdb-size or give fewer --static-fdb"
        case .destinationPortInSourceRange(let port, let range):
            "--dstport \(port) lies inside --src-port-range \(range.lowerBound)-\(range.upperBound): a sender bound to it "
                + "would take the tunnel's own traffic; give a source range without it"
        case .captureOptionsWithoutCapture:
            "--capture-point and --capture-filter need --capture FILE"
        case .acceptPrefixWithoutAcceptAny:
            "--accept-cidr limits which sources --accept-any-peer learns as peers; add --accept-any-peer (configured --peer "
                + "hosts need no prefix)"
        case .acceptPrefixFamily(let prefix, let local):
            "--accept-cidr \(prefix) and --local \(local) are of different IP versions: no peer could be inside it"
        }
    }
}

/// What to capture, as asked for before the file is opened (`CaptureTap` opens it).
public struct CaptureOptions: Sendable, Equatable {
    /// The pcap file to write; nil for no capture.
    public var path: String?
    /// Where to capture; nil when not given, which means both ends.
    public var point: CapturePoint?
    /// A tcpdump-syntax expression that captured frames must match.
    public var filter: String?

    public init(path: String? = nil, point: CapturePoint? = nil, filter: String? = nil) {
        self.path = path
        self.point = point
        self.filter = filter
    }
}

extension Encapsulation {
    /// The tunnel that loose options name, as a command line or config file gives them: `kind`
    /// when given, else GRE if any GRE option is, else VXLAN. An option of the other kind is an
    /// error rather than ignored, so that a typo does not build a different tunnel.
    public init(kind: TunnelKind?, vni: UInt32?, greKey: UInt32?, greChecksum: Bool = false,
                greSequence: Bool = false) throws(ConfigurationError) {
        switch kind ?? (greKey != nil || greChecksum || greSequence ? .gre : .vxlan) {
        case .vxlan:
            guard let vni else { throw .missingVNI }
            guard greKey == nil, !greChecksum, !greSequence else { throw .greOptionsWithVXLAN }
            self = .vxlan(vni: vni)
        case .gre:
            guard vni == nil else { throw .vniWithGRE }
            self = .gre(GREOptions(key: greKey, checksum: greChecksum, sequence: greSequence))
        }
    }
}

extension EngineConfiguration {
    /// Checks that the options agree with one another and with the device's and the capture's,
    /// and throws the first contradiction, in the order a reader of `ferry run`'s options meets
    /// them. What only the system can tell (the local address exists, the TAP can be made) is
    /// left to `Engine`.
    ///
    /// `offloadsListed` says that `device.offloads` is a list named offload by offload, each of
    /// which must then apply, rather than `.all`, which asks for every offload that applies.
    public func check(device: Engine.DeviceOptions, offloadsListed: Bool = false,
                      capture: CaptureOptions = CaptureOptions()) throws(ConfigurationError) {
        guard !peers.isEmpty || acceptAnyPeer || peersAtRunTime else { throw .noPeers }
        if !acceptPrefixes.isEmpty, !acceptAnyPeer { throw .acceptPrefixWithoutAcceptAny }
        for prefix in acceptPrefixes where prefix.address.isIPv6 != local.isIPv6 {
            throw .acceptPrefixFamily(prefix: prefix, local: local)
        }
        for peer in peers where peer.isIPv6 != local.isIPv6 {
            throw .peerAddressFamily(peer: peer, local: local)
        }
        for peer in peers where peer == local {
            throw .peerIsLocal(peer)
        }
        let isGRE = encapsulation.kind == .gre
        if isGRE, udpChecksum != nil { throw .udpChecksumWithGRE }
        if !isGRE, grePath == .link { throw .grePathWithVXLAN }
        for entry in staticEntries where !peers.contains(entry.peer) {
            throw .staticEntryNotAPeer(mac: entry.mac, peer: entry.peer)
        }
        let staticMACs = Set(staticEntries.map(\.mac.value)).count
        if staticMACs > fdbCapacity { throw .tooManyStaticEntries(count: staticMACs, capacity: fdbCapacity) }
        if !isGRE, sourcePortRange.contains(destinationPort) {
            throw .destinationPortInSourceRange(port: destinationPort, range: sourcePortRange)
        }

        let offloads = device.offloads
        for (needs, name) in [(Offloads.tcpSegmentation, "tso"), (.udpSegmentation, "uso")]
        where offloads.contains(needs) && !offloads.contains(.checksum) {
            throw .offloadNeedsChecksum(name: name)
        }
        if offloadsListed, offloads.contains(.genericSegmentation),
           let blocker = udpSegmentationBlocker(capturingOuter: false), blocker.contradictsTunnel {
            throw .segmentationOffloadUnusable(listed: offloads, blocker: blocker)
        }

        if capture.path == nil, capture.point != nil || capture.filter != nil {
            throw .captureOptionsWithoutCapture
        }
    }
}
