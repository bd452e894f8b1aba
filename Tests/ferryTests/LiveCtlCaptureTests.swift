import FerryCapture
import FerryLab
import FerryWire
import Foundation
import Testing

extension LiveLabTests {
    /// Issue 14, items 1 and 2: `ferry ctl capture` from a running ferry (h1, the receiving side
    /// of a VXLAN tunnel from h0) while a ping and an iperf3 stream run through it, read by
    /// tshark as it comes; and the drops point, while a third host sends h1 wrong-VNI,
    /// unknown-source and malformed VXLAN.
    @Suite struct LiveCtlCaptureTests {
        typealias P = HandMadePacket
        static let h0 = "10.99.0.1", h1 = "10.99.0.2", intruder = "10.99.0.3"
        /// iperf3's stream: bounded, so that the comparison is not one of the machine's load.
        static let rate = "50M", seconds = 3

        /// `ferry ctl capture ARGS` against host `i`'s ferry, through `sh -c` so that its output
        /// can be piped (`pipe`: a shell command that reads it); started in the background.
        func startCapture(_ live: LiveLab, _ i: Int, _ arguments: String, pipe: String, name: String) throws -> Process {
            let command = "\(live.ferryBinary) ctl capture --control \(live.lab.controlPath(i)) \(arguments) -w - 2>\(live.file(name + ".err")) | \(pipe)"
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", command]
            p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            try p.run()
            return p
        }

        /// Waits until host `i`'s ferry has logged `n` captures attached in all.
        func waitForAttached(_ live: LiveLab, _ i: Int, _ n: Int) throws {
            let attached = Lab.waitUntil(timeout: 10) {
                let log = (try? String(contentsOfFile: live.ferryLog(i), encoding: .utf8)) ?? ""
                return log.components(separatedBy: "attached:").count - 1 >= n
            }
            let errors = ((try? FileManager.default.contentsOfDirectory(atPath: live.logs)) ?? []).filter { $0.hasSuffix(".err") }
                .map { "\($0): " + ((try? String(contentsOfFile: live.file($0), encoding: .utf8)) ?? "") }
            try #require(attached, "capture \(n) not attached: \(live.logTail(i)) \(errors)")
        }

        func waitForExit(_ p: Process, _ what: String, timeout: Double = 20) throws {
            guard Lab.waitUntil(timeout: timeout, { !p.isRunning }) else {
                p.terminate()
                throw UnexpectedOutput("\(what) did not end within \(timeout) s")
            }
        }

        /// Runs iperf3 from `client` to `server`; its received bits per second.
        func iperf(_ live: LiveLab, from client: Lab.Container, to server: Lab.Container, tag: String) throws -> Double {
            let listener = try live.spawn(server.namespace, ["iperf3", "-s", "-1"], log: "iperf3-server-\(tag).log")
            defer { if listener.isRunning { listener.terminate() } }
            _ = Lab.waitUntil(timeout: 10, interval: 0.05) {
                (try? live.exec(server.namespace, ["ss", "-ltn", "sport = :5201"]).stdout.contains("5201")) ?? false
            }
            let out = try live.exec(client.namespace, ["iperf3", "-c", server.address, "-b", Self.rate, "-t", String(Self.seconds), "-J"],
                                    timeout: Double(Self.seconds) + 30)
            guard let json = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any],
                  let end = json["end"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
                  let bps = (received["bits_per_second"] as? NSNumber)?.doubleValue
            else { throw UnexpectedOutput("iperf3 (\(tag)) -J has no end.sum_received: \(out.stdout)") }
            return bps
        }

        @Test func liveCaptureFiltersStreamsAndReportsLossAndDrops() throws {
            let live = try LiveLab(tag: "ctlcap", hosts: 3, withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let (a, b) = (live.container(0), live.container(1))
            try live.startFerry(on: 0, peers: [1], tunnel: LiveTunnel.vxlan.arguments)
            try live.startFerry(on: 1, peers: [0], tunnel: LiveTunnel.vxlan.arguments)
            let warm = try live.ping(from: a.namespace, to: b.address, count: 3)
            try #require(warm.received >= 1, "no ping through Ferry: \(warm)")
            let baseline = try iperf(live, from: a, to: b, tag: "baseline")

            // Two captures at once on h1, with different filters: ICMP read by tshark from the
            // pipe; TCP (50 records) to a file; and a third of both points for decapsulation.
            let icmpOut = live.file("icmp.txt")
            let icmp = try startCapture(live, 1, "--point inner --filter icmp --duration 6",
                                        pipe: "tshark -l -r - -T fields -e icmp.type -e tcp.port > \(icmpOut)", name: "icmp")
            let tcpFile = live.file("tcp.pcapng")
            let tcp = try startCapture(live, 1, "--point inner --filter tcp --count 50", pipe: "cat > \(tcpFile)", name: "tcp")
            let bothFile = live.file("both.pcapng")
            let both = try startCapture(live, 1, "--point both --duration 2", pipe: "cat > \(bothFile)", name: "both")
            try waitForAttached(live, 1, 3)
            let pings = try live.ping(from: a.namespace, to: b.address, count: 5)
            #expect(pings.received == 5, "\(pings)")
            _ = try iperf(live, from: a, to: b, tag: "captured")
            try waitForExit(icmp, "the icmp capture")
            try waitForExit(tcp, "the tcp capture")
            try waitForExit(both, "the both capture")

            // Exactly the echo requests and replies: type 8 in, type 0 out, nothing of TCP.
            let lines = try String(contentsOfFile: icmpOut, encoding: .utf8).split(separator: "\n").map(String.init)
            #expect(lines.filter { $0.hasPrefix("8\t") || $0 == "8" }.count == 5, "\(lines)")
            #expect(lines.filter { $0.hasPrefix("0\t") || $0 == "0" }.count == 5, "\(lines)")
            #expect(lines.count == 10 && !lines.contains { $0.contains("5201") }, "\(lines)")
            let icmpReport = try String(contentsOfFile: live.file("icmp.err"), encoding: .utf8)
            #expect(icmpReport.contains("10 records, 0 lost (reader too slow)"), "\(icmpReport)")
            let tcpPackets = try Self.packets(tcpFile)
            #expect(tcpPackets.count == 50)
            #expect(tcpPackets.allSatisfy { FrameFields.ipv4(Array($0.data))?.proto == IPProtocol.tcp })
            #expect(try String(contentsOfFile: live.file("tcp.err"), encoding: .utf8).contains("50 records, 0 lost"))

            // The outer packets decapsulate (ferry pcap decap) to the very inner frames recorded
            // beside them.
            let bothPackets = try Self.packets(bothFile)
            let inner = bothPackets.filter { $0.interfaceName == "inner" }.map { Array($0.data) }
            let outer = bothPackets.filter { $0.interfaceName == "outer" }
            #expect(outer.count > 100 && inner.count > 100, "\(outer.count) outer, \(inner.count) inner")
            let outerFile = live.file("outer.pcap")
            let writer = try PcapFileWriter(path: outerFile)
            for p in outer { writer.write(Array(p.data), timestamp: p.timestamp) }
            try writer.close()
            let decapFile = live.file("decap.pcap")
            let decap = try Lab.capture([live.ferryBinary, "pcap", "decap", outerFile, decapFile])
            #expect(decap.status == 0, "\(decap.stderr)")
            let decapsulated = try PcapFileReader(path: decapFile).readAll().map { Array($0.bytes) }
            let bothReport = try String(contentsOfFile: live.file("both.err"), encoding: .utf8)
            #expect(decapsulated.count == outer.count, "\(decap.stdout)")
            if bothReport.contains(" 0 lost") {
                #expect(Self.multiset(decapsulated) == Self.multiset(inner), "decapsulated outer frames differ from the inner ones")
            } else {
                #expect(Self.multiset(decapsulated).allSatisfy { Self.multiset(inner)[$0.key, default: 0] >= $0.value })
            }

            // A reader that stops reading: forwarding goes on at its rate, and the reader is told
            // what it lost.
            let stalled = try startCapture(live, 1, "--point both --duration 2", pipe: "(sleep 5; cat > /dev/null)", name: "stalled")
            try waitForAttached(live, 1, 4)
            let underStall = try iperf(live, from: a, to: b, tag: "stalled")
            try waitForExit(stalled, "the stalled capture")
            let stallReport = try String(contentsOfFile: live.file("stalled.err"), encoding: .utf8)
            let counts = stallReport.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
            #expect(stallReport.contains("lost (reader too slow)") && counts.count >= 2 && counts[1] > 0, "\(stallReport)")
            // Loosely: the machine is shared, and both runs are capped at the same rate.
            #expect(underStall >= baseline * 0.5, "iperf3 \(underStall) bit/s under a stalled capture, \(baseline) without")
            print("ctl capture: iperf3 \(Int(baseline / 1e6)) Mbit/s without capture, \(Int(underStall / 1e6)) with a stalled reader; \(stallReport)")

            // Drops: a third host sends h1 wrong-VNI (spoofed from h0), unknown-source and
            // truncated VXLAN; each is in the drops capture with its reason, as many as counted.
            let before = try live.stats(1)
            let dropsFile = live.file("drops.pcapng")
            let drops = try startCapture(live, 1, "--point drops --duration 4", pipe: "cat > \(dropsFile)", name: "drops")
            try waitForAttached(live, 1, 5)
            func spoofedUDP(_ sport: UInt16, _ payload: [UInt8]) -> [UInt8] {
                P.ipv4(source: Self.h0, destination: Self.h1, protocol: IPProtocol.udp, payload: P.udp(sourcePort: sport, payload: payload))
            }
            let sent = ["unexpected_vni": 6, "unknown_peer": 5, "truncated_vxlan": 7]
            try PacketSender(live: live).send(from: live.host(2).namespace, [
                .raw(destination: Self.h1, packet: spoofedUDP(45002, P.vxlan(vni: 7, inner: P.markedFrame(2))), count: 6),
                .udp(destination: Self.h1, port: 4789, sourcePort: 45001, payload: P.vxlan(vni: 42, inner: P.markedFrame(1)), count: 5),
                .raw(destination: Self.h1, packet: spoofedUDP(45003, [0x08, 0, 0, 0]), count: 7),
            ], name: "drops")
            try waitForExit(drops, "the drops capture")
            let after = try live.stats(1)
            let listing = try Lab.capture(["tshark", "-r", dropsFile, "-T", "fields", "-e", "frame.interface_name", "-e", "ip.src",
                                           "-e", "frame.comment"])
            let shown = try Lab.capture(["tshark", "-r", dropsFile, "-T", "fields", "-E", "header=y", "-e", "frame.number",
                                         "-e", "frame.interface_name", "-e", "ip.src", "-e", "ip.dst", "-e", "udp.srcport",
                                         "-e", "vxlan.vni", "-e", "frame.len", "-e", "frame.comment"])
            print("ctl capture --point drops, read by tshark:\n\(shown.stdout)")
            let comments = listing.stdout.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
            #expect(comments.allSatisfy { $0.first == "drops" })
            for (reason, count) in sent {
                let inCapture = comments.filter { $0.last?.hasPrefix("drop \(reason) ") == true }
                let counted = try after.drop(reason) - before.drop(reason)
                #expect(inCapture.count == count && counted == UInt64(count), "\(reason): \(inCapture.count) in the capture, \(counted) counted, \(count) sent")
                #expect(inCapture.allSatisfy { $0.last!.hasSuffix(" direction=ingress") })
            }
            #expect(comments.contains { $0.last?.hasPrefix("drop unexpected_vni peer=10.99.0.1 worker=") == true })
            #expect(comments.contains { $0.last?.hasPrefix("drop unknown_peer peer=10.99.0.3 worker=") == true })
            let filtered = try Lab.capture(["tshark", "-r", dropsFile, "-Y", "frame.comment contains \"unexpected_vni\""])
            #expect(filtered.stdout.split(separator: "\n").count == 6, "\(filtered.stdout)")
        }

        static func packets(_ path: String) throws -> [PcapngBlocks.Packet] {
            try PcapngBlocks(Array(try Data(contentsOf: URL(fileURLWithPath: path)))).packets()
        }

        static func multiset(_ frames: [[UInt8]]) -> [[UInt8]: Int] {
            frames.reduce(into: [:]) { $0[$1, default: 0] += 1 }
        }
    }
}
