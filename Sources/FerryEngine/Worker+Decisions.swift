import FerryWire

// The data path's decisions, one function each: what a frame or a packet meets, answered as a
// verdict (a peer, a route, or the `DropReason` that refuses it). Each is pure over its inputs,
// the worker's settings (all `let`) and the shared state: no counter, no learning, no send.
// The worker acts on the verdict (`Worker+Egress.swift`, `Worker+Ingress.swift`), and the trace
// (`Worker+Trace.swift`) prints it, so that `ferry ctl trace` cannot drift from what forwards.
// Inlined where the worker calls them: the verdict costs what the test it replaces did.
extension Worker {
    // MARK: - Egress

    /// Where an egress frame goes once its destination has been looked up.
    enum EgressRoute: Equatable {
        /// To peer slot `p` alone.
        case unicast(Int)
        /// To every flood target.
        case flood
        /// Not at all.
        case refused(DropReason)
    }

    /// The peer slot a frame to `destination` goes to alone, as the forwarding table says at
    /// `now`; nil: it is flooded (a group address, or one unknown, local or aged out).
    @inline(__always)
    static func unicastPeer(_ destination: MACAddress, in table: ForwardingTable, now: Int64) -> Int? {
        destination.isMulticast ? nil : table.lookup(destination, now: now)
    }

    /// Whether a peer takes floods: configured, or learned and heard from within the ageing time.
    @inline(__always)
    static func takesFloods(_ peer: Peer) -> Bool { peer.isActive }

    /// A frame of `length` bytes whose lookup gave peer slot `target` (-1: none), when
    /// `floods` peers take floods: a runt is refused, a known destination goes to its peer,
    /// the rest is flooded, unless there is nobody to flood to.
    @inline(__always)
    static func route(length: Int, target: Int, floods: Int) -> EgressRoute {
        guard length >= Ethernet.headerLength else { return .refused(.runtFrame) }
        if target >= 0 { return .unicast(target) }
        return floods > 0 ? .flood : .refused(.noPeer)
    }

    /// Why an inner frame of `length` bytes cannot go into one outer packet whose inner frame
    /// may be `maximumInnerFrame` bytes (`Worker.maximumInnerFrame`); nil when it fits.
    @inline(__always)
    static func tunnelRefusal(length: Int, maximumInnerFrame: Int) -> DropReason? {
        length <= maximumInnerFrame ? nil : .oversizeFrame
    }

    /// The largest inner IP packet an ICMP "too big" error advertises, for `maximumInnerFrame`.
    @inline(__always)
    static func tooBigMTU(maximumInnerFrame: Int) -> Int { maximumInnerFrame - Ethernet.headerLength }

    // MARK: - Ingress

    /// A tunnel packet, in the form the transport hands up, as this tunnel takes it: the
    /// decapsulated packet, or why it is refused (malformed, another VNI or key, or a keyed
    /// packet on a keyless GRE tunnel, which is not the same tunnel).
    @inline(__always)
    func decapsulationVerdict(_ packet: UnsafeRawBufferPointer, source: IPAddress, sourcePort: UInt16) -> DecapsulationResult {
        let result: DecapsulationResult = switch receivedForm {
        case .vxlanPayload:
            decapsulator.decapsulate(vxlanPayload: packet, source: source, destination: local, sourcePort: sourcePort)
        case .ipPacket: decapsulator.decapsulate(ipPacket: packet)
        case .grePayload: decapsulator.decapsulate(grePayload: packet, source: source, destination: local)
        }
        if refusesGREKeys, case .packet(let decapsulated) = result, decapsulated.greKey != nil { return .drop(.unexpectedGREKey) }
        return result
    }

    /// Why a packet from `source`, peer slot `peer` (nil: not a peer), is not admitted; nil
    /// when it is: a peer's, or in accept-any mode a source `--accept-cidr` lets in.
    @inline(__always)
    func admissionRefusal(peer: Int?, source: IPAddress) -> DropReason? {
        guard peer == nil else { return nil }
        guard acceptsAnyPeer else { return .unknownPeer }
        return state.admits(source) ? nil : .peerNotAccepted
    }

    /// Why a decapsulated frame's source MAC is refused: a group address, zero, the TAP's own
    /// (a loop), or in accept-any mode a local container's (delivered, it would move that
    /// container's bridge port to the TAP); nil when it may come from the tunnel.
    @inline(__always)
    func innerSourceRefusal(_ source: MACAddress) -> DropReason? {
        if source.isMulticast || source == .zero || source == deviceMAC { return .innerSourceMACInvalid }
        if acceptsAnyPeer, localMACs.contains(source) { return .innerSourceMACLocal }
        return nil
    }

    /// Why a decapsulated frame cannot be delivered: longer than the bridge takes from the TAP
    /// (written, it would vanish there uncounted), unless its checksum is partial (a peer
    /// kernel's super-frame, which the TAP writer joins or cuts); nil when it can.
    @inline(__always)
    func deliveryRefusal(_ inner: UnsafeRawBufferPointer) -> DropReason? {
        inner.count > maximumDeliveredFrame && PartialChecksum.find(in: inner) == nil ? .oversizeFrame : nil
    }

    /// The outer ECN field of a received packet: from the IP header a raw IPv4 socket hands
    /// up, else from the socket's report of the TOS (`tos`).
    @inline(__always)
    func outerECN(_ packet: UnsafeRawBufferPointer, tos: UInt8) -> UInt8 {
        receivedForm == .ipPacket ? packet[1] & 3 : tos & 3
    }

    /// RFC 6040 on `inner`, in place, for an outer ECN field `outer`: CE outside is copied in,
    /// or refused when the inner packet cannot carry it (`ECN.decapsulate` says which).
    @inline(__always)
    static func congestionRefusal(outer: UInt8, inner: UnsafeMutableRawBufferPointer) -> DropReason? {
        outer == ECN.ce && ECN.decapsulate(outer: outer, frame: inner) == .drop ? .congestionOnNotECT : nil
    }
}
