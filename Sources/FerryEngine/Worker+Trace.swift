import FerryWire

// The trace: one frame walked through the decisions of `Worker+Decisions.swift`, over the
// engine's state as it is now, each decision recorded (`TraceReport`). Nothing is sent, learned
// or counted: the forwarding table is only read (under its lock, briefly), peers are read
// through `PeerTable.all`, outer headers are written by a template of the trace's own (a
// worker's counts IPv4 IDs and GRE sequence numbers), and RFC 6040 marks a copy of the frame.
// Safe from any thread: it reads the worker's settings (`let`s), never its step's state.
extension Worker {
    /// What the data path would do with `frame` going `direction`.
    public func trace(_ frame: [UInt8], _ direction: TraceDirection) -> TraceReport {
        switch direction {
        case .egress: traceEgress(frame)
        case .ingress(let from, let id, let ecn): traceIngress(frame, from: from, tunnelID: id, outerECN: ecn)
        }
    }

    // MARK: - Egress

    func traceEgress(_ frame: [UInt8]) -> TraceReport {
        var r = TraceReport(direction: "egress", length: frame.count)
        let now = clock()
        let all = peers.all
        let floodTargets = all.indices.filter { Self.takesFloods(all[$0]) }
        frame.withUnsafeBytes { walkEgress($0, now: now, all: all, floodTargets: floodTargets, into: &r) }
        return r
    }

    /// `Worker.egress(frame:…)`'s decisions, in its order (with `lookUpDestinations`'s before).
    func walkEgress(_ bytes: UnsafeRawBufferPointer, now: Int64, all: [Peer], floodTargets: [Int], into r: inout TraceReport) {
        guard bytes.count >= Ethernet.headerLength else {
            r.add("classification", "runt: \(bytes.count) bytes, shorter than an Ethernet header")
            if case .refused(let reason) = Self.route(length: bytes.count, target: -1, floods: floodTargets.count) { r.drop(reason) }
            return
        }
        let destination = MACAddress(bytes, at: 0), source = MACAddress(bytes, at: 6)
        let kind = destination == .broadcast ? "broadcast" : destination.isMulticast ? "multicast" : "unicast"
        r.add("classification", "\(kind) frame \(source) > \(destination)", [Self.describe(bytes)])
        let (found, entry, sourceEntry, ageing) = state.fdb.withLock { table in
            (Self.unicastPeer(destination, in: table, now: now), table.anyEntry(for: destination), table.anyEntry(for: source),
             table.ageingSeconds)
        }
        let target = found ?? -1
        r.add("forwarding", Self.lookupResult(destination, found, entry, now: now, ageing: ageing, all),
              [Self.sourceNote(source, sourceEntry, all)])
        let route = Self.route(length: bytes.count, target: target, floods: floodTargets.count)
        let chosen: [Int]
        switch route {
        case .refused(let reason):
            r.add("peers", "none to flood to: no peer is active", all.isEmpty ? ["no peers"] : all.map { Self.peerLine($0) })
            r.drop(reason)
            return
        case .unicast(let p):
            chosen = [p]
            r.add("peers", "\(all[p].address)")
        case .flood:
            chosen = floodTargets
            let left = all.indices.filter { !floodTargets.contains($0) }.map { "\(all[$0].address): not active (retired, or removed)" }
            r.add("peers", "flood to \(floodTargets.count) active peer\(floodTargets.count == 1 ? "" : "s"): "
                  + floodTargets.map { "\(all[$0].address)" }.joined(separator: ", "), left)
        }
        let maximum = Self.maximumInnerFrame(underlayMTU: underlayMTU.load(), ipOverhead: ipOverhead)
        let limit = "largest inner frame \(maximum) bytes (underlay MTU \(underlayMTU.load()) less \(ipOverhead) bytes of outer headers)"
        if let reason = Self.tunnelRefusal(length: bytes.count, maximumInnerFrame: maximum) {
            var details: [String] = []
            if virtioLength > 0 {
                // A traced frame has no virtio-net header: it is a whole frame, never a super-frame.
                details.append("""
                    traced as a whole frame: from this TAP (offloads on), a TCP or UDP super-frame comes with a GSO header \
                    and is cut into segments that fit, each then going as above
                    """)
            }
            r.add("mtu", "\(bytes.count) bytes do not fit: \(limit)", details)
            r.add("icmp", Self.tooBigLine(bytes, innerMTU: Self.tooBigMTU(maximumInnerFrame: maximum)))
            r.drop(reason)
            return
        }
        r.add("mtu", "\(bytes.count) bytes fit: \(limit)")
        for p in chosen { r.add("encapsulation", "to \(all[p].address)", header(for: all[p], bytes)) }
        let names = chosen.map { "\(all[$0].address)" }
        if case .unicast = route {
            r.end(.sent, peers: names, "sent to \(names[0])")
        } else {
            r.end(.flooded, peers: names, "flooded to [\(names.joined(separator: ", "))]")
        }
    }

    /// The forwarding lookup in words.
    static func lookupResult(_ destination: MACAddress, _ found: Int?, _ entry: ForwardingTable.Entry?, now: Int64, ageing: Int64,
                             _ all: [Peer]) -> String {
        if let p = found, let e = entry {
            let peer = p < all.count ? "\(all[p].address)" : "slot \(p)"
            return e.isStatic ? "hit: \(destination) -> \(peer) (static)" : "hit: \(destination) -> \(peer) (learned, age \(now - e.lastSeen) s of \(ageing))"
        }
        if destination.isMulticast { return "group address: flood" }
        guard let e = entry else { return "miss: \(destination) unknown -> flood" }
        if e.peer == ForwardingTable.localPort { return "miss: \(destination) is a local bridge port's (seen \(now - e.lastSeen) s ago) -> flood" }
        return "miss: \(destination) aged out (seen \(now - e.lastSeen) s ago, ageing \(ageing) s) -> flood"
    }

    /// What the egress step notes about the source (`ForwardingTable.noteLocal`), in words.
    static func sourceNote(_ source: MACAddress, _ e: ForwardingTable.Entry?, _ all: [Peer]) -> String {
        guard !source.isMulticast else { return "source \(source) is a group address: not noted" }
        guard let e else { return "source \(source): noted as a local bridge port" }
        if e.isStatic { return "source \(source): static entry, kept" }
        if e.peer == ForwardingTable.localPort { return "source \(source): known as a local bridge port" }
        let peer = e.peer < all.count ? "\(all[e.peer].address)" : "slot \(e.peer)"
        return "source \(source): was learned behind \(peer); it moves home (fdb_local_moved)"
    }

    /// The ICMP error `TooBigReply` would answer `frame` with (rate-limited to
    /// `icmpPerSecond`), in words.
    static func tooBigLine(_ frame: UnsafeRawBufferPointer, innerMTU: Int) -> String {
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: TooBigReply.maximumLength, alignment: 8)
        defer { out.deallocate() }
        guard let n = TooBigReply.write(answering: frame, innerMTU: innerMTU, to: out) else {
            return "no ICMP error may be sent about this frame (not IPv4 with DF nor IPv6, a group address, a fragment, an ICMP error, or VLAN-tagged)"
        }
        let reply = UnsafeRawBufferPointer(rebasing: out[0..<n])
        let kind = EthernetView(reply)?.etherType == EtherType.ipv6 ? "ICMPv6 packet too big" : "ICMP fragmentation needed"
        return "\(kind) (MTU \(innerMTU)) back through the TAP: \(describe(reply)) (at most \(icmpPerSecond) a second)"
    }

    /// The outer headers this worker would put in front of `frame` for `peer`, decoded.
    func header(for peer: Peer, _ frame: UnsafeRawBufferPointer) -> [String] {
        let options = peer.templates[0].options
        // A template of the trace's own: writing with a worker's would advance its IPv4 ID.
        let template = EncapsulationTemplate(options)
        let length = template.headerLength(.ipPacket)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 8)
        defer { out.deallocate() }
        _ = template.writeHeaders(.ipPacket, to: out.baseAddress!, inner: frame)
        let hash = FlowHash.hash(ofFrame: frame)
        var socket: (port: UInt16, tos: UInt8)? = nil
        var lines: [String] = []
        if udp.senders > 0, case .fixed(let tos) = options.tos {
            // The kernel writes IP and UDP: the sender's port, the socket's TOS (as `SocketTransport` binds them).
            let k = sender(for: frame)
            let range = options.sourcePortRange
            let span = Int(range.upperBound - range.lowerBound) + 1
            let first = Int(range.lowerBound) + span * k / udp.senders
            socket = (UInt16(first), tos)
            lines.append("""
                through UDP sender \(k) of \(udp.senders) (flow hash \(String(hash, radix: 16)) picks it): the kernel writes IP and UDP, \
                from the sender's port \(first) (its slice's first; the next one if that was taken) with the socket's TOS
                """)
        }
        lines = Self.decodeOuter(UnsafeRawBufferPointer(out), options: options, innerLength: frame.count, socket: socket) + lines
        if socket == nil, case .vxlan = options.encapsulation {
            lines.append("source port \(template.sourcePort(forFlowHash: hash)): flow hash \(String(hash, radix: 16)) in \(options.sourcePortRange)")
        }
        if let hop = peer.linkPath {
            lines.append("link path: to next hop \(hop.mac) on interface \(hop.interfaceIndex) (packet socket)")
        } else if transport.hasLinkSender {
            lines.append("IP path (raw socket): no link-layer next hop resolved yet")
        }
        return lines
    }

    /// An outer IP packet's headers (IPv4 or IPv6, then UDP and VXLAN, or GRE), one a line.
    /// `socket`: the port and TOS of the UDP socket that sends it (the kernel writes IP and UDP).
    static func decodeOuter(_ h: UnsafeRawBufferPointer, options: TunnelOptions, innerLength: Int,
                            socket: (port: UInt16, tos: UInt8)? = nil) -> [String] {
        var lines: [String] = []
        let l4: Int
        if h[0] >> 4 == 4 {
            let tos = socket?.tos ?? h[1], flags = h.u16(6)
            lines.append("""
                IPv4 \(IPv4Address(h, at: 12)) > \(IPv4Address(h, at: 16)), total length \(h.u16(2)), TTL \(h[8]), \
                TOS 0x\(String(tos, radix: 16)) (DSCP \(tos >> 2), ECN \(ecnName(tos & 3))), DF \(flags & IPv4.flagDontFragment != 0 ? "set" : "clear"), \
                protocol \(h[9])
                """)
            l4 = IPv4.minimumHeaderLength
        } else {
            let tc = socket?.tos ?? UInt8(truncatingIfNeeded: h.u32(0) >> 20)
            lines.append("""
                IPv6 \(IPv6Address(h, at: 8)) > \(IPv6Address(h, at: 24)), payload length \(h.u16(4)), hop limit \(h[7]), \
                traffic class 0x\(String(tc, radix: 16)) (ECN \(ecnName(tc & 3))), next header \(h[6])
                """)
            l4 = IPv6.headerLength
        }
        switch options.encapsulation {
        case .vxlan:
            let checksum = h.u16(l4 + 6)
            lines.append("UDP \(socket?.port ?? h.u16(l4)) > \(h.u16(l4 + 2)), length \(h.u16(l4 + 4)), checksum \(checksum == 0 ? "none" : "0x" + String(checksum, radix: 16))")
            lines.append("VXLAN flags 0x\(String(h[l4 + 8], radix: 16)), VNI \(h.u32(l4 + 12) >> 8)")
        case .gre(let g):
            var gre = "GRE flags 0x\(String(h.u16(l4), radix: 16)), protocol 0x\(String(h.u16(l4 + 2), radix: 16))"
            if let key = g.key { gre += ", key \(key)" } else { gre += ", no key" }
            if g.checksum { gre += ", checksum" }
            if g.sequence { gre += ", sequence numbers" }
            lines.append(gre)
        }
        lines.append("\(innerLength) bytes of inner frame behind \(h.count) bytes of outer IP headers")
        return lines
    }

    static func ecnName(_ ecn: UInt8) -> String {
        switch ecn & 3 {
        case ECN.notECT: "not-ECT"
        case ECN.ect1: "ECT(1)"
        case ECN.ect0: "ECT(0)"
        default: "CE"
        }
    }

    static func peerLine(_ p: Peer) -> String {
        "\(p.address): " + (p.isVacant ? "removed" : p.isLearned ? (p.isActive ? "learned, active" : "learned, retired") : "configured")
    }

    // MARK: - Ingress

    func traceIngress(_ bytes: [UInt8], from: IPAddress?, tunnelID: UInt32?, outerECN ecn: UInt8) -> TraceReport {
        var r = TraceReport(direction: "ingress", length: bytes.count)
        let packet: [UInt8], source: IPAddress, sourcePort: UInt16, tos: UInt8
        if let from {
            switch tracePacket(inner: bytes, from: from, tunnelID: tunnelID, outerECN: ecn) {
            case .success(let built):
                packet = built.packet
                sourcePort = built.sourcePort
                source = from
                tos = ecn & 3
                r.add("received", "from \(from): the inner frame behind this tunnel's header", [
                    "as the socket hands it up: " + Self.formName(receivedForm) + ", \(packet.count) bytes",
                    bytes.withUnsafeBytes { Self.describe($0) },
                ])
            case .failure(let why):
                r.add("received", why.description)
                r.end(.notReceived, "not received: \(why)")
                return r
            }
        } else {
            switch received(outer: bytes) {
            case .success(let got):
                packet = Array(bytes[got.range])
                source = got.source
                sourcePort = got.sourcePort
                tos = got.tos
                r.add("received", "outer packet from \(source)", [
                    "as the socket hands it up: " + Self.formName(receivedForm) + ", \(packet.count) bytes",
                ])
            case .failure(let why):
                r.add("received", why.description)
                r.end(.notReceived, "not received: \(why)")
                return r
            }
        }
        packet.withUnsafeBytes { walkIngress($0, source: source, sourcePort: sourcePort, tos: tos, into: &r) }
        return r
    }

    /// `Worker.ingress(packet:…)`'s decisions, in its order.
    func walkIngress(_ packet: UnsafeRawBufferPointer, source: IPAddress, sourcePort: UInt16, tos: UInt8, into r: inout TraceReport) {
        let now = clock()
        let all = peers.all
        // From the snapshot, which holds its peers: `index(of:)` borrows them, which only a
        // worker inside a step may do (a peer removed meanwhile could be freed under the trace).
        let peer = all.firstIndex { !$0.isVacant && $0.address == source }
        r.add("peer", peer.map { $0 < all.count ? Self.peerLine(all[$0]) : "slot \($0)" } ?? "\(source) is not a peer")
        let result = decapsulationVerdict(packet, source: source, sourcePort: sourcePort)
        guard case .packet(let d) = result else {
            r.add("decapsulation", "refused: \(result.dropReason!.summary)", Self.expectation(configuration.encapsulation))
            r.drop(result.dropReason!)
            return
        }
        let inner = UnsafeRawBufferPointer(rebasing: packet[d.inner])
        var id = ""
        if let vni = d.vni { id = "VNI \(vni)" } else if let key = d.greKey { id = "GRE key \(key)" } else { id = "GRE, no key" }
        r.add("decapsulation", "\(d.kind == .vxlan ? "VXLAN" : "GRE"), \(id): this tunnel's", [Self.describe(inner)])
        if let reason = admissionRefusal(peer: peer, source: source) {
            r.add("admission", reason == .unknownPeer ? "refused: \(source) is not a configured peer (and accept-any is off)"
                                                   : "refused: \(source) is outside --accept-cidr \(configuration.acceptPrefixes.map(\.description))")
            r.drop(reason)
            return
        }
        r.add("admission", peer != nil ? "a peer's packet" : "accept-any: \(source) may become a peer"
              + (configuration.acceptPrefixes.isEmpty ? "" : " (within --accept-cidr)"))
        let sourceMAC = MACAddress(inner, at: 6)
        if let reason = innerSourceRefusal(sourceMAC) {
            r.add("inner source", "refused: \(sourceMAC): \(reason.summary)")
            r.drop(reason)
            return
        }
        r.add("inner source", "\(sourceMAC): may come from the tunnel")
        if let reason = deliveryRefusal(inner) {
            r.add("size", "\(inner.count) bytes: longer than the \(maximumDeliveredFrame) the bridge takes from the TAP")
            r.drop(reason)
            return
        }
        r.add("size", "\(inner.count) bytes: within the \(maximumDeliveredFrame) the bridge takes")
        let outer = outerECN(packet, tos: tos)
        var copy = Array(inner)
        let refusal = copy.withUnsafeMutableBytes { Self.congestionRefusal(outer: outer, inner: $0) }
        if let refusal {
            r.add("ecn", "outer CE over a not-ECT inner packet (RFC 6040): cannot carry the mark")
            r.drop(refusal)
            return
        }
        r.add("ecn", outer != ECN.ce ? "outer \(Self.ecnName(outer)): nothing to copy"
              : copy != Array(inner) ? "outer CE copied into the inner IP header (RFC 6040)" : "outer CE: the inner packet has it, or is not IP")
        let slot: Int
        if let peer {
            slot = peer
        } else {
            guard !peers.isFull else {
                r.add("peer", "the peer table is full: \(source) cannot become a peer")
                r.drop(.unknownPeer)
                return
            }
            slot = -1
            r.add("peer", "\(source) would become a learned peer")
        }
        let learning: String
        if slot < 0 {
            learning = "\(sourceMAC) behind the new peer \(source)"
        } else {
            let outcome = state.fdb.withLock { $0.learnPreview(sourceMAC, peer: slot, now: now) }
            learning = switch outcome {
            case .learned: "\(sourceMAC) learned behind \(source)"
            case .refreshed: "\(sourceMAC) refreshed behind \(source)"
            case .moved(let from): "\(sourceMAC) moves to \(source) from \(from < all.count ? "\(all[from].address)" : "slot \(from)")"
            case .full: "not learned: the forwarding table is full (fdb_full)"
            case .staticKept: "not learned: \(sourceMAC) has a static entry"
            case .peerLimit: "not learned: \(source) has its --max-macs-per-peer (fdb_peer_limit)"
            case .localKept: "not learned: \(sourceMAC) is a local bridge port's (fdb_local_refused)"
            }
        }
        r.add("learning", learning)
        r.add("tap", "written to the TAP: \(copy.count) bytes, to the bridge")
        r.end(.delivered, peers: ["\(source)"], "delivered to the bridge")
    }

    /// What this tunnel takes, for a refusal's details.
    static func expectation(_ e: Encapsulation) -> [String] {
        switch e {
        case .vxlan(let vni): ["this tunnel: VXLAN, VNI \(vni)"]
        case .gre(let g): ["this tunnel: GRE, " + (g.key.map { "key \($0)" } ?? "no key")]
        }
    }

    static func formName(_ form: ReceivedForm) -> String {
        switch form {
        case .vxlanPayload: "a UDP payload (VXLAN header and inner frame)"
        case .ipPacket: "an IPv4 packet (raw GRE socket)"
        case .grePayload: "a GRE header and inner frame (raw IPv6 socket)"
        }
    }

    /// `inner` behind this tunnel's header as a packet from `from` reaches the worker: its
    /// VNI or key `tunnelID` (nil: this tunnel's), the outer ECN field `outerECN`; and the UDP
    /// source port a peer would have used. Or why it cannot be made.
    func tracePacket(inner: [UInt8], from: IPAddress, tunnelID: UInt32?, outerECN: UInt8)
        -> Result<(packet: [UInt8], sourcePort: UInt16), TraceInputError> {
        var encapsulation = configuration.encapsulation
        if let tunnelID {
            switch encapsulation {
            case .vxlan: encapsulation = .vxlan(vni: tunnelID)
            case .gre(var g): g.key = tunnelID; encapsulation = .gre(g)
            }
        }
        guard from.isIPv6 == local.isIPv6 else {
            return .failure(TraceInputError("from=\(from) is not of the local address's family (\(local))"))
        }
        guard let options = try? TunnelOptions(encapsulation: encapsulation, local: from, remote: local,
                                               destinationPort: configuration.destinationPort,
                                               sourcePortRange: configuration.sourcePortRange)
        else { return .failure(TraceInputError("no tunnel header can be made with VNI \(tunnelID ?? 0)")) }
        guard inner.count <= options.maximumInnerFrameLength else {
            return .failure(TraceInputError("\(inner.count) bytes do not fit one outer packet"))
        }
        let template = EncapsulationTemplate(options)
        let form: EncapsulationTemplate.Form = receivedForm == .ipPacket ? .ipPacket : .tunnelHeader
        let headerLength = template.headerLength(form)
        var packet = [UInt8](repeating: 0, count: headerLength + inner.count)
        packet.withUnsafeMutableBytes { out in
            inner.withUnsafeBytes { frame in
                _ = template.writeHeaders(form, to: out.baseAddress!, inner: frame)
                (out.baseAddress! + headerLength).copyMemory(from: frame.baseAddress!, byteCount: frame.count)
            }
            if form == .ipPacket {
                // The outer ECN field asked for, and the header checksum to match.
                out[1] = out[1] & 0xFC | outerECN & 3
                out.setU16(0, at: 10)
                out.setU16(~InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: out[0..<IPv4.minimumHeaderLength])), at: 10)
            }
        }
        let port = inner.withUnsafeBytes { template.sourcePort(forFlowHash: FlowHash.hash(ofFrame: $0)) }
        return .success((packet, port))
    }

    /// Where, in a whole outer frame, the bytes the socket would hand up lie, from which source
    /// and port, with which TOS; or why the kernel would hand the frame to no socket of Ferry's.
    func received(outer bytes: [UInt8]) -> Result<(range: Range<Int>, source: IPAddress, sourcePort: UInt16, tos: UInt8), TraceInputError> {
        bytes.withUnsafeBytes { b in
            guard let eth = EthernetView(b) else { return .failure(TraceInputError("\(b.count) bytes: too short for an Ethernet header")) }
            let ip = eth.payloadOffset
            let source: IPAddress, destination: IPAddress, proto: UInt8, l4: Int, end: Int, tos: UInt8
            switch eth.etherType {
            case EtherType.ipv4:
                guard b.count >= ip + IPv4.minimumHeaderLength, b[ip] >> 4 == 4 else { return .failure(TraceInputError("a truncated IPv4 header")) }
                let ihl = Int(b[ip] & 0x0F) * 4, total = Int(b.u16(ip + 2))
                guard ihl >= IPv4.minimumHeaderLength, total >= ihl, ip + total <= b.count else {
                    return .failure(TraceInputError("an IPv4 header whose lengths do not fit the frame (the kernel drops it)"))
                }
                source = .v4(IPv4Address(b, at: ip + 12))
                destination = .v4(IPv4Address(b, at: ip + 16))
                proto = b[ip + 9]
                l4 = ip + ihl
                end = ip + total
                tos = b[ip + 1]
            case EtherType.ipv6:
                let packet = UnsafeRawBufferPointer(rebasing: b[ip...])
                guard let upper = IPv6.upperLayer(of: packet), b.count >= ip + IPv6.headerLength + Int(b.u16(ip + 4)) else {
                    return .failure(TraceInputError("a truncated IPv6 packet"))
                }
                source = .v6(IPv6Address(b, at: ip + 8))
                destination = .v6(IPv6Address(b, at: ip + 24))
                proto = upper.protocol
                l4 = ip + upper.offset
                end = ip + IPv6.headerLength + Int(b.u16(ip + 4))
                tos = UInt8(truncatingIfNeeded: b.u32(ip) >> 20)
            default:
                return .failure(TraceInputError("EtherType 0x\(String(eth.etherType, radix: 16)) is not IP: no tunnel packet"))
            }
            guard destination == local else {
                return .failure(TraceInputError("addressed to \(destination), not to this ferry's local address \(local)"))
            }
            switch (configuration.encapsulation, proto) {
            case (.vxlan, IPProtocol.udp):
                guard end - l4 >= UDP.headerLength else { return .failure(TraceInputError("a truncated UDP header")) }
                let port = b.u16(l4 + 2), length = Int(b.u16(l4 + 4))
                guard port == configuration.destinationPort else {
                    return .failure(TraceInputError("UDP to port \(port), not this tunnel's \(configuration.destinationPort): the kernel hands it to no socket of Ferry's"))
                }
                guard length >= UDP.headerLength, l4 + length <= end else { return .failure(TraceInputError("a UDP length that does not fit (the kernel drops it)")) }
                return .success(((l4 + UDP.headerLength)..<(l4 + length), source, b.u16(l4), tos))
            case (.gre, IPProtocol.gre):
                return .success((receivedForm == .ipPacket ? ip..<end : l4..<end, source, 0, tos))
            default:
                return .failure(TraceInputError("IP protocol \(proto): this ferry's tunnel is \(configuration.encapsulation.kind), whose socket does not take it"))
            }
        }
    }

    /// A frame in one line: addresses, EtherType, and for IP the addresses, protocol and ports.
    static func describe(_ f: UnsafeRawBufferPointer) -> String {
        guard let eth = EthernetView(f) else { return "\(f.count) bytes" }
        var s = "\(eth.source) > \(eth.destination)"
        if let vlan = eth.vlanID { s += ", VLAN \(vlan)" }
        let l3 = eth.payloadOffset
        var proto: UInt8 = 0, l4 = -1
        switch eth.etherType {
        case EtherType.ipv4 where f.count >= l3 + IPv4.minimumHeaderLength:
            s += ", IPv4 \(IPv4Address(f, at: l3 + 12)) > \(IPv4Address(f, at: l3 + 16))"
            s += f.u16(l3 + 6) & IPv4.flagDontFragment != 0 ? " (DF" : " (no DF"
            s += ", ECN \(ecnName(f[l3 + 1] & 3)))"
            proto = f[l3 + 9]
            l4 = l3 + Int(f[l3] & 0x0F) * 4
        case EtherType.ipv6 where f.count >= l3 + IPv6.headerLength:
            s += ", IPv6 \(IPv6Address(f, at: l3 + 8)) > \(IPv6Address(f, at: l3 + 24))"
            proto = f[l3 + 6]
            l4 = l3 + IPv6.headerLength
        case EtherType.arp where f.count >= l3 + 28:
            s += ", ARP \(f.u16(l3 + 6) == 1 ? "request" : "reply") \(IPv4Address(f, at: l3 + 14)) > \(IPv4Address(f, at: l3 + 24))"
        default:
            s += ", EtherType 0x\(String(eth.etherType, radix: 16))"
        }
        switch proto {
        case IPProtocol.tcp where f.count >= l4 + 4: s += ", TCP \(f.u16(l4)) > \(f.u16(l4 + 2))"
        case IPProtocol.udp where f.count >= l4 + 4: s += ", UDP \(f.u16(l4)) > \(f.u16(l4 + 2))"
        case IPProtocol.icmp where f.count > l4: s += ", ICMP type \(f[l4])"
        case IPProtocol.icmpv6 where f.count > l4: s += ", ICMPv6 type \(f[l4])"
        default: break
        }
        return s + ", \(f.count) bytes"
    }
}

/// Why a traced frame cannot be made into what the worker would receive.
public struct TraceInputError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
