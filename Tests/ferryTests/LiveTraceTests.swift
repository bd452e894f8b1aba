import FerryCapture
import FerryLab
import FerryWire
import Foundation
import Testing

extension LiveLabTests {
    /// `ferry ctl trace` against the running data path: each frame is traced, then sent for real
    /// (from a container onto the bridge, or as a VXLAN packet from another host), and what the
    /// trace's verdict says (sent to, flooded to, delivered, dropped: reason) is what the
    /// daemon's counters show it did.
    @Suite struct LiveTraceTests {
        /// Sends one raw Ethernet frame from `interface` with an AF_PACKET socket.
        static let rawSender = """
            import socket, sys
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind((sys.argv[1], 0))
            s.send(bytes.fromhex(sys.argv[2]))
            """

        /// What the daemon did with one frame, from the counters' change.
        struct Did: Equatable, CustomStringConvertible {
            var outcome: String
            var peers: [String]
            var dropReason: String?
            var description: String { "\(outcome) \(peers)\(dropReason.map { " " + $0 } ?? "")" }
        }

        static func did(_ before: CtlStats, _ after: CtlStats, peers: [String], inbound: Bool) throws -> Did {
            let moved = after.drops.filter { $0.value > (before.drops[$0.key] ?? 0) }.map(\.key).sorted()
            if !moved.isEmpty { return Did(outcome: "dropped", peers: [], dropReason: moved.joined(separator: ",")) }
            let from = peers.filter { after.rx($0) > before.rx($0) }
            if inbound, try after.counter("tap_tx_frames") > before.counter("tap_tx_frames") { return Did(outcome: "delivered", peers: from) }
            let sent = peers.filter { after.tx($0) > before.tx($0) }.sorted()
            if try after.counter("flooded_frames") > before.counter("flooded_frames") { return Did(outcome: "flooded", peers: sent) }
            if try after.counter("unicast_frames") > before.counter("unicast_frames") { return Did(outcome: "sent", peers: sent) }
            return Did(outcome: "nothing", peers: [])
        }

        /// `ferry ctl trace … --json` on host 0: its verdict, and the report's text form too.
        static func trace(_ live: LiveLab, _ words: [String]) throws -> (Did, String) {
            let base = [live.ferryBinary, "ctl", "trace", "--control", live.lab.controlPath(0)] + words
            let json = try Lab.capture(base + ["--json"], timeout: 20)
            guard json.status == 0 else { throw UnexpectedOutput("ferry ctl trace \(words): exit \(json.status): \(json.stderr)") }
            guard let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any],
                  let outcome = object["outcome"] as? String, let peers = object["peers"] as? [String]
            else { throw UnexpectedOutput("ferry ctl trace --json: not a trace report: \(json.stdout)") }
            let text = try Lab.capture(base, timeout: 20)
            let did = Did(outcome: outcome, peers: outcome == "delivered" ? peers : peers.sorted(), dropReason: object["dropReason"] as? String)
            return (did, text.stdout)
        }

        @Test func traceVerdictsAreWhatTheDataPathDoes() throws {
            let live = try LiveLab(tag: "trace", hosts: 3, withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            try live.startFerry(on: 0, peers: [1], tunnel: ["--encap", "vxlan", "--vni", "42"])
            let (h0, h1, h2) = (live.host(0), live.host(1), live.host(2))
            let c0 = live.container(0)
            let script = live.file("raw-send.py")
            try Self.rawSender.write(toFile: script, atomically: true, encoding: .utf8)
            let remote = "02:aa:00:00:00:01"
            var printed = ""

            /// Traces `words`, sends the frame with `send`, waits for the daemon to have taken
            /// it (`taken`), and compares.
            func check(_ name: String, _ words: [String], expect: String, send: () throws -> Void,
                       taken: (CtlStats, CtlStats) throws -> Bool) throws {
                let (said, text) = try Self.trace(live, words)
                let before = try live.stats(0)
                try send()
                let after = try live.waitForStats(0, timeout: 10) { try taken(before, $0) }
                Thread.sleep(forTimeInterval: 0.2)  // anything else the frame set off
                let did = try Self.did(before, try live.stats(0), peers: [h1.underlay, h2.underlay], inbound: words[0] == "in=tunnel")
                _ = after
                #expect(said == did, "\(name): the trace says \(said), the data path did \(did)\n\(text)\n\(live.logTail(0))")
                #expect(said.outcome == expect, "\(name): \(said)\n\(text)")
                if printed.count < 8000 { printed += "$ ferry ctl trace \(words.joined(separator: " "))\n\(text)\n" }
            }
            let sender = PacketSender(live: live)
            func fromTunnel(_ host: Lab.Host, vni: UInt32, inner: [UInt8]) -> () throws -> Void {
                { try sender.send(from: host.namespace, [.udp(destination: h0.underlay, port: VXLAN.defaultPort, sourcePort: 40000,
                                                              payload: HandMadePacket.vxlan(vni: vni, inner: inner), count: 1)],
                                  name: "trace-\(host.index)-\(vni)") }
            }
            let received = { (b: CtlStats, a: CtlStats) throws -> Bool in try a.counter("received_packets") > b.counter("received_packets") }
            // To the container's MAC but not its address: delivered, and dropped there without a
            // word (an answer would go into the tunnel and mix with what is counted next).
            let innerWords = ["dst=\(c0.mac)", "src=\(remote)", "ipv4", "10.18.0.9>10.17.0.200", "udp", "40000>5001"]
            let inner = FrameBuilder.frame(destinationMAC: MACAddress(c0.mac)!, sourceMAC: MACAddress(remote)!,
                                           source: IPAddress("10.18.0.9")!, destination: IPAddress("10.17.0.200")!,
                                           payload: .udp(sourcePort: 40000, destinationPort: 5001, data: []))

            // Inbound: from the configured peer (learning `remote` behind it), from a host that
            // is no peer, and with another VNI.
            try check("from a configured peer", ["in=tunnel", "from=\(h1.underlay)", "vni=42"] + innerWords, expect: "delivered",
                      send: fromTunnel(h1, vni: 42, inner: inner), taken: received)
            try check("from an unknown source", ["in=tunnel", "from=\(h2.underlay)"] + innerWords, expect: "dropped",
                      send: fromTunnel(h2, vni: 42, inner: inner), taken: received)
            try check("with a wrong VNI", ["in=tunnel", "from=\(h1.underlay)", "vni=7"] + innerWords, expect: "dropped",
                      send: fromTunnel(h1, vni: 7, inner: inner), taken: received)

            // Outbound, from the container onto the bridge: to the MAC learned just now, to an
            // unknown one, to broadcast (the frame given as --hex), then one too big for an
            // underlay lowered to 1400 (inner frames of 1364 bytes at most; the TAP still takes 1450).
            func frame(to destination: String, length: Int = 0) -> [UInt8] {
                let data = FrameBuilder.pattern(max(0, length - 42))
                return FrameBuilder.frame(destinationMAC: MACAddress(destination)!, sourceMAC: MACAddress(c0.mac)!,
                                          source: IPAddress(c0.address)!, destination: IPAddress("10.18.0.9")!,
                                          payload: .udp(sourcePort: 40000, destinationPort: 5001, data: data))
            }
            func fromBridge(_ bytes: [UInt8]) -> () throws -> Void {
                { try live.exec(c0.namespace, [live.python, script, "eth0", bytes.map { String(format: "%02x", $0) }.joined()]) }
            }
            let fromTAP = { (b: CtlStats, a: CtlStats) throws -> Bool in try a.counter("tap_rx_frames") > b.counter("tap_rx_frames") }
            func outWords(_ destination: String, length: Int? = nil) -> [String] {
                // (A,B for A>B: the form that needs no quoting in a shell.)
                ["in=tap", "dst=\(destination)", "src=\(c0.mac)", "ipv4", "\(c0.address),10.18.0.9", "udp", "40000,5001"]
                    + (length.map { ["len=\($0)"] } ?? [])
            }
            #expect(try live.fdb(0).peer(of: remote).map { Live.sameAddress($0, h1.underlay) } == true, "\(remote) was not learned")
            try check("to a learned MAC", outWords(remote), expect: "sent", send: fromBridge(frame(to: remote)), taken: fromTAP)
            let unknown = frame(to: "02:bb:00:00:00:09")
            try check("to an unknown MAC", ["in=tap", "--hex", unknown.map { String(format: "%02x", $0) }.joined()], expect: "flooded",
                      send: fromBridge(unknown), taken: fromTAP)
            // The broadcast as frame 2 of a pcap.
            let broadcast = frame(to: "ff:ff:ff:ff:ff:ff")
            let pcap = live.file("trace.pcap")
            let writer = try PcapFileWriter(path: pcap)
            for f in [unknown, broadcast] { writer.write(f, timestamp: PacketTimestamp(seconds: 1, microseconds: 0)) }
            try writer.close()
            try check("to broadcast", ["in=tap", "--pcap", pcap, "--frame", "2"], expect: "flooded", send: fromBridge(broadcast), taken: fromTAP)
            try live.ip(h0.namespace, "link", "set", h0.underlayInterface, "mtu", "1400")
            let lowered = try live.waitForStats(0, timeout: 15) { $0.underlayMTU == 1400 }
            try #require(lowered.underlayMTU == 1400, "the underlay MTU change was not noticed: \(live.logTail(0))")
            let icmpBefore = try live.stats(0).counter("icmp_errors_sent")
            try check("oversize", outWords(remote, length: 1400), expect: "dropped", send: fromBridge(frame(to: remote, length: 1400)),
                      taken: fromTAP)
            #expect(try live.stats(0).counter("icmp_errors_sent") == icmpBefore + 1, "the ICMP error the trace names was sent")
            print("[live trace]\n\(printed)")
        }
    }
}
