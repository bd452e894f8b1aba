// The trace (`Worker.trace`) against the data path: for each frame, the verdict the trace
// prints is what a step does with the same frame (checked by doing it: what was sent, written,
// and which drop counter moved), and the trace itself changes nothing. And the decisions it is
// made of, one by one.

@testable import FerryEngine
import FerryLinux
import FerryTestSupport
import FerryWire
import Testing

@Suite("Trace: the data path's decisions, printed")
struct TraceTests {
    // MARK: - The decisions

    @Test("route: runt, unicast, flood, nobody to flood to")
    func route() {
        #expect(TestWorker.route(length: 13, target: 0, floods: 2) == .refused(.runtFrame))
        #expect(TestWorker.route(length: 60, target: 1, floods: 0) == .unicast(1))
        #expect(TestWorker.route(length: 60, target: -1, floods: 2) == .flood)
        #expect(TestWorker.route(length: 60, target: -1, floods: 0) == .refused(.noPeer))
    }

    @Test("the tunnel's MTU, and the MTU an ICMP error advertises")
    func mtu() {
        #expect(TestWorker.tunnelRefusal(length: 1464, maximumInnerFrame: 1464) == nil)
        #expect(TestWorker.tunnelRefusal(length: 1465, maximumInnerFrame: 1464) == .oversizeFrame)
        #expect(TestWorker.tooBigMTU(maximumInnerFrame: 1464) == 1450)
    }

    @Test("RFC 6040: CE over not-ECT is refused, over ECT(0) copied in, anything else untouched")
    func congestion() {
        var notECT = udpFrame(tos: 0), ect0 = udpFrame(tos: 2)
        let ect0Before = ect0
        #expect(notECT.withUnsafeMutableBytes { TestWorker.congestionRefusal(outer: ECN.ce, inner: $0) } == .congestionOnNotECT)
        #expect(notECT.withUnsafeMutableBytes { TestWorker.congestionRefusal(outer: ECN.ect0, inner: $0) } == nil)
        #expect(ect0.withUnsafeMutableBytes { TestWorker.congestionRefusal(outer: ECN.ce, inner: $0) } == nil)
        #expect(ect0[15] & 3 == ECN.ce && ect0 != ect0Before, "CE is copied into the inner header")
    }

    @Test("admission and inner sources, configured and accept-any")
    func admission() throws {
        let h = try Harness()
        #expect(h.worker.admissionRefusal(peer: 0, source: peer4a) == nil)
        #expect(h.worker.admissionRefusal(peer: nil, source: stranger4) == .unknownPeer)
        #expect(h.worker.innerSourceRefusal(tapMAC) == .innerSourceMACInvalid)
        #expect(h.worker.innerSourceRefusal(.broadcast) == .innerSourceMACInvalid)
        #expect(h.worker.innerSourceRefusal(.zero) == .innerSourceMACInvalid)
        #expect(h.worker.innerSourceRefusal(remoteMAC) == nil)
        let open = try Harness(peers: []) { c in
            c.acceptAnyPeer = true
            c.acceptPrefixes = [try! IPPrefix(parsing: "10.99.0.0/29")]
        }
        #expect(open.worker.admissionRefusal(peer: nil, source: peer4a) == nil)
        #expect(open.worker.admissionRefusal(peer: nil, source: stranger4) == .peerNotAccepted, ".9 is outside /29")
        try open.egress(udpFrame(from: localMAC))  // the local container's MAC is local now
        #expect(open.worker.innerSourceRefusal(localMAC) == .innerSourceMACLocal)
    }

    @Test("learnPreview says what learn then does, and changes nothing")
    func learnPreview() {
        var t = ForwardingTable(capacity: 4, ageingSeconds: 300, peers: 4, macsPerPeer: 2)
        t.learn(numberedMAC(1), peer: 0, now: 100)
        t.learn(numberedMAC(2), peer: 0, now: 100)
        t.addStatic(numberedMAC(3), peer: 1)
        t.noteLocal(numberedMAC(4), now: 100)
        let cases: [(MACAddress, Int, Int64)] = [
            (numberedMAC(1), 0, 150),  // refreshed
            (numberedMAC(1), 1, 150),  // moved
            (numberedMAC(5), 0, 150),  // peer 0 at its bound
            (numberedMAC(5), 0, 500),  // the same, once peer 0's entries aged
            (numberedMAC(3), 2, 150),  // static
            (numberedMAC(4), 2, 150),  // local
            (numberedMAC(4), 2, 500),  // local, aged
            (numberedMAC(6), 2, 150),  // full (4 entries)
        ]
        for (mac, peer, now) in cases {
            var copy = t
            let preview = t.learnPreview(mac, peer: peer, now: now)
            #expect(t.entries == copy.entries)
            #expect(preview == copy.learn(mac, peer: peer, now: now), "\(mac) behind \(peer) at \(now)")
        }
    }

    // MARK: - Trace against the data path

    /// What one step did with a frame, read from the ports and counters.
    struct Done: Equatable, CustomStringConvertible {
        var outcome: TraceReport.Outcome
        var peers: [String]
        var dropReason: String?
        var description: String { "\(outcome.rawValue) \(peers) \(dropReason ?? "")" }
    }

    /// Traces `frame`, checks the trace changed nothing, runs `step`, and returns the trace's
    /// verdict and what the step did.
    func traceThenDo(_ h: Harness, _ frame: [UInt8], _ direction: TraceDirection, step: () throws -> Void) throws -> (TraceReport, Done) {
        let before = h.statistics, fdbBefore = h.worker.state.forwardingEntries()
        let report = h.worker.trace(frame, direction)
        #expect(h.statistics.counters == before.counters && h.worker.state.forwardingEntries() == fdbBefore, "the trace changed something")
        let sent = h.transport.sent.count, written = h.device.written.count
        try step()
        let after = h.statistics
        let moved = DropReason.allCases.filter { after.drops($0) > before.drops($0) }.map(\.name)
        let destinations = h.transport.sent[sent...].compactMap(\.destination).map(\.description)
        let done: Done
        if let reason = moved.first {
            done = Done(outcome: .dropped, peers: [], dropReason: moved.count == 1 ? reason : moved.joined(separator: ","))
        } else if h.device.written.count > written, destinations.isEmpty {
            done = Done(outcome: .delivered, peers: report.peers, dropReason: nil)
        } else {
            done = Done(outcome: destinations.count > 1 ? .flooded : .sent, peers: destinations.sorted(), dropReason: nil)
        }
        return (report, done)
    }

    func verdict(_ r: TraceReport) -> Done {
        Done(outcome: r.outcome, peers: r.outcome == .delivered ? r.peers : r.peers.sorted(), dropReason: r.dropReason)
    }

    @Test("egress: learned, unknown, broadcast, oversize and runt frames go where the trace says", arguments: Variant.all)
    func egressAgrees(variant: Variant) throws {
        let h = try Harness(variant)
        let remote = FrameBuilder.frame(destinationMAC: localMAC, sourceMAC: remoteMAC,
                                        source: variant.ipv6 ? remoteContainer6 : remoteContainer4,
                                        destination: variant.ipv6 ? localContainer6 : localContainer4,
                                        payload: .udp(sourcePort: 1, destinationPort: 2, data: []))
        try h.receive(remote, from: variant.peerA)  // remoteMAC learned behind peer A
        let frames: [(String, [UInt8], Done)] = [
            ("learned", udpFrame(to: remoteMAC, ipv6: variant.ipv6), Done(outcome: .sent, peers: ["\(variant.peerA)"])),
            ("unknown", udpFrame(to: otherRemoteMAC, ipv6: variant.ipv6), Done(outcome: .flooded, peers: ["\(variant.peerA)", "\(variant.peerB)"].sorted())),
            ("broadcast", arpRequest(from: localMAC), Done(outcome: .flooded, peers: ["\(variant.peerA)", "\(variant.peerB)"].sorted())),
            ("oversize", udpFrame(to: remoteMAC, length: 1600, ipv6: variant.ipv6), Done(outcome: .dropped, peers: [], dropReason: "oversize_frame")),
            ("runt", [UInt8](repeating: 0xFF, count: 10), Done(outcome: .dropped, peers: [], dropReason: "runt_frame")),
        ]
        for (name, frame, expected) in frames {
            let (report, done) = try traceThenDo(h, frame, .egress) { try h.egress(frame) }
            #expect(verdict(report) == done, "\(name): the trace says \(verdict(report)), the step did \(done)\n\(report.text)")
            #expect(done == expected, "\(name)")
        }
        // The oversize frame's trace names the ICMP error the step sent back.
        let oversize = h.worker.trace(udpFrame(to: remoteMAC, length: 1600, ipv6: variant.ipv6), .egress)
        #expect(oversize.steps.contains { $0.stage == "icmp" && $0.result.contains(variant.ipv6 ? "packet too big" : "fragmentation needed") },
                "\(oversize.text)")
        let learned = h.worker.trace(udpFrame(to: remoteMAC, ipv6: variant.ipv6), .egress)
        #expect(learned.steps.contains { $0.stage == "forwarding" && $0.result.contains("hit") && $0.result.contains("\(variant.peerA)") })
        let header = learned.steps.first { $0.stage == "encapsulation" }?.details.joined(separator: "\n") ?? ""
        #expect(header.contains(variant.tunnelIDText), "\(learned.text)")
    }

    @Test("egress with no peer active: dropped as no_peer, as the step does")
    func noPeer() throws {
        let h = try Harness(peers: [])
        let (report, done) = try traceThenDo(h, udpFrame(), .egress) { try h.egress(udpFrame()) }
        #expect(verdict(report) == done && done.dropReason == "no_peer")
    }

    @Test("ingress: a peer's frame, a stranger's, another VNI or key, CE over not-ECT, a loop: as the step does", arguments: Variant.all)
    func ingressAgrees(variant: Variant) throws {
        let h = try Harness(variant)
        let inner = FrameBuilder.frame(destinationMAC: localMAC, sourceMAC: remoteMAC,
                                       source: variant.ipv6 ? remoteContainer6 : remoteContainer4,
                                       destination: variant.ipv6 ? localContainer6 : localContainer4,
                                       payload: .udp(sourcePort: 1, destinationPort: 2, data: FrameBuilder.pattern(40)))
        let loop = FrameBuilder.frame(destinationMAC: localMAC, sourceMAC: tapMAC, payload: .udp(sourcePort: 1, destinationPort: 2, data: []))
        let cases: [(String, [UInt8], IPAddress, UInt32?, UInt8, String?)] = [
            ("a peer's", inner, variant.peerA, nil, 0, nil),
            ("a stranger's", inner, variant.stranger, nil, 0, "unknown_peer"),
            ("another VNI or key", inner, variant.peerA, 7, 0, variant.encapsulation.kind == .vxlan ? "unexpected_vni" : "unexpected_gre_key"),
            ("a loop", loop, variant.peerA, nil, 0, "inner_source_mac_invalid"),
            // (The fake transport reports no TOS: CE outside only where the IP header comes up.)
            ("CE over not-ECT", inner, variant.peerA, nil, variant.receivedForm == .ipPacket ? ECN.ce : 0,
             variant.receivedForm == .ipPacket ? "ecn_ce_on_not_ect" : nil),
        ]
        for (name, frame, from, id, ecn, reason) in cases {
            // The packet the trace walks is the one the step receives.
            let packet = try h.worker.tracePacket(inner: frame, from: from, tunnelID: id, outerECN: ecn).get().packet
            let (report, done) = try traceThenDo(h, frame, .ingress(from: from, tunnelID: id, outerECN: ecn)) {
                try h.ingress([(packet, from)])
            }
            #expect(verdict(report) == done, "\(name): the trace says \(verdict(report)), the step did \(done)\n\(report.text)")
            #expect(done.dropReason == reason, "\(name)")
        }
    }

    @Test("ingress of a whole outer frame, as a capture holds it")
    func outerFrame() throws {
        let h = try Harness(.vxlan4)
        let inner = remoteFrame()
        let options = try TunnelOptions(encapsulation: .vxlan(vni: 42), local: peer4a, remote: local4)
        let template = EncapsulationTemplate(options)
        var outer = [UInt8](repeating: 0, count: template.fullHeaderLength + inner.count)
        outer.withUnsafeMutableBytes { b in
            for (i, x) in inner.enumerated() { b[template.fullHeaderLength + i] = x }
            _ = template.encapsulateFrame(in: b, innerOffset: template.fullHeaderLength, innerLength: inner.count)
        }
        let report = h.worker.trace(outer, .ingress(from: nil, tunnelID: nil, outerECN: 0))
        #expect(report.outcome == .delivered && report.peers == ["\(peer4a)"], "\(report.text)")
        // Another port: the kernel would give it to no socket of Ferry's.
        outer[14 + 20 + 2] = 0x21
        let other = h.worker.trace(outer, .ingress(from: nil, tunnelID: nil, outerECN: 0))
        #expect(other.outcome == .notReceived && other.verdict.contains("port"), "\(other.text)")
    }

    @Test("accept-any: a source inside --accept-cidr would become a peer, one outside is refused")
    func acceptAny() throws {
        let h = try Harness(peers: []) { c in
            c.acceptAnyPeer = true
            c.acceptPrefixes = [try! IPPrefix(parsing: "10.99.0.0/29")]
        }
        for (from, reason) in [(peer4a, nil), (stranger4, "peer_not_accepted")] as [(IPAddress, String?)] {
            let packet = try h.worker.tracePacket(inner: remoteFrame(), from: from, tunnelID: nil, outerECN: 0).get().packet
            let (report, done) = try traceThenDo(h, remoteFrame(), .ingress(from: from, tunnelID: nil, outerECN: 0)) {
                try h.ingress([(packet, from)])
            }
            #expect(verdict(report) == done && done.dropReason == reason, "\(report.text)")
        }
    }
}

extension Variant {
    /// How the trace's decoded header names this tunnel's VNI or key.
    var tunnelIDText: String {
        switch encapsulation {
        case .vxlan(let vni): "VNI \(vni)"
        case .gre(let g): "key \(g.key ?? 0)"
        }
    }
}
