import FerryCapture
import FerryLab
import FerryWire
import Foundation
import Testing

extension LiveLabTests {
    /// What Ferry puts on the underlay with every outer-header option set, judged from a capture on
    /// the receiving host's underlay (tcpdump) by FerryWire's decapsulator and by tshark; and
    /// Ferry's own `--capture` file, judged against that wire capture and the TAP's.
    @Suite struct LiveCaptureTests {
        static let vni: UInt32 = 42
        static let ttl: UInt8 = 33
        static let tos: UInt8 = 0x20
        static let ports: ClosedRange<UInt16> = 40000...40100
        // Offloads off: the test compares what crossed h0's TAP with Ferry's inner capture frame
        // by frame, and with TSO the TAP carries super-frames that Ferry sends as segments.
        static let tunnelH0 = ["--vni", "42", "--ttl", "33", "--tos", "0x20", "--df", "set",
                               "--src-port-range", "40000-40100", "--udp-csum", "--offloads", "off"]
        static let pings = 5
        static let tcpBytes = 100_000
        static let tcpPort: UInt16 = 5555
        /// The largest inner frame that fits the 1500-byte underlay: 1500 less IP, UDP and VXLAN.
        static let largestFrame = 1500 - 20 - 8 - 8

        /// A TCP sink: one connection, read to EOF, answer with the byte count.
        static let server = """
            import socket, sys
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((sys.argv[1], int(sys.argv[2])))
            s.listen(1)
            s.settimeout(30)
            print("listening", flush=True)
            c, _ = s.accept()
            c.settimeout(30)
            n = 0
            while True:
                d = c.recv(65536)
                if not d:
                    break
                n += len(d)
            c.sendall(("got %d" % n).encode())
            c.close()
            """

        /// A TCP source: connect (retrying, bounded), send N bytes, read the answer.
        static let client = """
            import socket, sys, time
            for attempt in range(50):
                try:
                    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                sys.exit("no connection")
            c.settimeout(30)
            c.sendall(b"ferry-capture-" * (int(sys.argv[3]) // 14) + b"x" * (int(sys.argv[3]) % 14))
            c.shutdown(socket.SHUT_WR)
            print(c.recv(100).decode())
            """

        @Test func underlayAndFerryCaptureMatchWhatWasSent() throws {
            let live = try LiveLab(tag: "capture", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let dir = live.logs
            let (h0, h1) = (live.host(0), live.host(1))
            let (a, b) = (h0.containers[0], h1.containers[0])
            try Self.server.write(toFile: "\(dir)/server.py", atomically: true, encoding: .utf8)
            try Self.client.write(toFile: "\(dir)/client.py", atomically: true, encoding: .utf8)

            // The wire capture starts before either Ferry; h0's Ferry (whose file covers its whole
            // life) before the TAP capture; h1's last, so that all h1 sends finds h0 listening.
            let wire = try Tcpdump(live, h1.namespace, interface: "u0", file: "\(dir)/wire.pcap", filter: "udp port 4789")
            let ferryCapture = "\(dir)/ferry-h0.pcap"
            // One worker: the comparisons below read the file in the wire's order, and with
            // several workers only each flow keeps its order in the file, not the whole.
            try live.startFerry(on: 0, tunnel: Self.tunnelH0,
                                extra: ["--capture", ferryCapture, "--capture-point", "both", "--workers", "1"])
            // What the bridge hands Ferry on h0: frames the kernel sends out of the TAP.
            let tap = try Tcpdump(live, h0.namespace, interface: "ferry0", file: "\(dir)/tap.pcap", direction: "out")
            // h1 with offloads off too: its UDP senders would put a checksum (partial, on a veth) in
            // the UDP headers that the comparison below reads, where Ferry's rebuilt ones hold zero.
            // Its outer TOS is fixed, so that h0's file shows what the socket reported.
            try live.startFerry(on: 1, tunnel: ["--vni", "42", "--offloads", "off", "--tos", "0x48"])

            let ping = try live.ping(from: a.namespace, to: b.address, count: Self.pings, extra: ["-s", "100", "-p", "5eed"])
            #expect(ping.received == Self.pings, "\(ping)")
            let server = try live.spawn(b.namespace, [live.python, "\(dir)/server.py", b.address, "\(Self.tcpPort)"],
                                        log: "server.log")
            let client = try live.attempt(a.namespace, [live.python, "\(dir)/client.py", b.address, "\(Self.tcpPort)",
                                                       "\(Self.tcpBytes)"], timeout: 60)
            #expect(client.stdout.contains("got \(Self.tcpBytes)"), "TCP through Ferry: \(client.stdout) \(client.stderr)")
            _ = Lab.waitUntil(timeout: 10) { !server.isRunning }

            // Let the last frames land, then stop the TAP capture, Ferry (which closes its file),
            // and the wire capture, in that order, so that each window holds the one before.
            usleep(500_000)
            let tapFrames = try tap.stop()
            let stats = try live.stats(0)
            live.stopFerry(on: 0)
            let wireFrames = try wire.stop()
            let ferryFrames = try PcapFileReader(path: ferryCapture).readAll()

            // Decapsulate the wire capture, each direction on its own.
            let local = IPAddress("10.99.0.1")!, remote = IPAddress("10.99.0.2")!
            let decapsulator = Decapsulator(policy: DecapsulationPolicy(acceptGRE: false, udpChecksum: .report))
            var outbound: [(frame: OwnedFrame, packet: DecapsulatedPacket)] = []
            var inbound: [(frame: OwnedFrame, packet: DecapsulatedPacket)] = []
            for (i, frame) in wireFrames.enumerated() {
                let result = frame.bytes.withUnsafeBytes { decapsulator.decapsulate(frame: $0) }
                guard let p = result.packet else {
                    Issue.record("wire frame \(i + 1) does not decapsulate: \(result)")
                    continue
                }
                if p.outerSource == local { outbound.append((frame, p)) } else if p.outerSource == remote { inbound.append((frame, p)) }
            }
            let sent = outbound.map { Array($0.frame.bytes[$0.packet.inner]) }
            let received = inbound.map { Array($0.frame.bytes[$0.packet.inner]) }
            try #require(outbound.count >= Self.pings + 20, "too few packets from h0 on the wire: \(outbound.count)")

            // Every outer header from h0 is as configured (one issue per field, naming the packets).
            var portsByFlow: [String: Set<UInt16>] = [:]
            var wrong = IssueTally()
            for (i, (_, p)) in outbound.enumerated() {
                let what = "packet \(i + 1) (\(FrameFields.describe(sent[i])))"
                let innerTOS = FrameFields.ipv4(sent[i]).map { sent[i][$0.offset + 1] } ?? 0
                let ecn = innerTOS & 0x03
                wrong.check(p.kind == .vxlan && p.vni == Self.vni, "VNI", "\(what): \(String(describing: p.vni))")
                wrong.check(p.outerDestination == remote && p.destinationPort == 4789, "destination",
                            "\(what): \(p.outerDestination):\(p.destinationPort)")
                wrong.check(p.ttl == Self.ttl, "TTL", "\(what): \(p.ttl)")
                wrong.check(p.tos & 0xFC == Self.tos & 0xFC, "DSCP", "\(what): TOS \(p.tos)")
                wrong.check(p.tos & 0x03 == (ecn == 0x03 ? 0x02 : ecn), "ECN (RFC 6040)", "\(what): outer \(p.tos & 3) for inner \(ecn)")
                wrong.check(p.dontFragment, "DF", "\(what): clear")
                wrong.check(p.udpChecksum == .valid, "UDP checksum", "\(what): \(p.udpChecksum)")
                wrong.check(Self.ports.contains(p.sourcePort), "source port in \(Self.ports)", "\(what): \(p.sourcePort)")
                portsByFlow[FrameFields.flowKey(sent[i]), default: []].insert(p.sourcePort)
            }
            wrong.expectNone("outer headers from h0 on the wire")
            for (flow, ports) in portsByFlow {
                #expect(ports.count == 1, "inner flow \(flow) left on source ports \(ports.sorted())")
            }
            let tcpFlow = "ip 6 \(a.address):"
            let tcpPackets = outbound.indices.filter { FrameFields.flowKey(sent[$0]).hasPrefix(tcpFlow) }
            #expect(tcpPackets.count >= 20, "the TCP flow is missing from the wire: \(tcpPackets.count) packets")

            // tshark, independently: checksums good, fields as configured.
            try checkWithTshark("\(dir)/wire.pcap", count: outbound.count)

            // The pings crossed (seq 1…N, with the -p pattern).
            let echoes = sent.compactMap(Self.echoRequest)
            #expect(echoes.map(\.sequence) == Array(1...UInt16(Self.pings)), "echo requests on the wire: \(echoes.map(\.sequence))")
            for e in echoes {
                #expect(e.data.count == 100 && e.data.dropFirst(16).enumerated().allSatisfy { $1 == ($0 % 2 == 0 ? 0x5e : 0xed) },
                        "echo \(e.sequence) payload is not the ping's pattern")
            }

            // Ferry's own file: outer packets from h0 are the wire's from the IP header on; the
            // received ones (rebuilt from what the socket reports) match from the UDP header on.
            var fileOut: [[UInt8]] = [], fileIn: [[UInt8]] = [], fileInner: [[UInt8]] = []
            for f in ferryFrames {
                if let ip = FrameFields.ipv4(f.bytes), ip.proto == IPProtocol.udp,
                   FrameFields.ipv4Address(f.bytes, at: 26).hasPrefix("10.99.0."),
                   FrameFields.u16(f.bytes, 14 + ip.headerLength + 2) == 4789 {
                    if FrameFields.ipv4Address(f.bytes, at: 26) == "10.99.0.1" { fileOut.append(f.bytes) } else { fileIn.append(f.bytes) }
                } else {
                    fileInner.append(f.bytes)
                }
            }
            let wireOut = outbound.map { Array($0.frame.bytes.dropFirst(14)) }
            let fileOutIP = fileOut.enumerated().map { i, f in Self.kernelIdentified(Array(f.dropFirst(14)), wire: i < wireOut.count ? wireOut[i] : nil) }
            expectSameFrameBytes(fileOutIP, wireOut, "Ferry's outer capture vs the wire, from the IP header")
            expectSameFrameBytes(fileIn.map { Array($0.dropFirst(34)) }, inbound.map { Array($0.frame.bytes.dropFirst(34)) },
                                 "Ferry's capture of received packets vs the wire, from the UDP header")
            // The rebuilt outer header carries the TOS the socket reported, the wire's.
            #expect(fileIn.map { $0[15] } == inbound.map { $0.frame.bytes[15] }, "outer TOS of received packets in Ferry's file")
            #expect(inbound.allSatisfy { $0.frame.bytes[15] & 0xFC == 0x48 }, "h1's --tos on the wire")

            // Its inner frames: those received from h1 (the wire's, in order), interleaved with
            // those the TAP handed it. Of these, the ones too big for the underlay (the bridge
            // passes the container's TSO bursts to the TAP whole, segmented at its 1500-byte MTU)
            // are dropped, each answered with an ICMP "fragmentation needed" that the file holds
            // right after it; all the others are on the wire, exactly and in order.
            var fileEgress: [[UInt8]] = [], fileErrors: [[UInt8]] = []
            var j = 0
            for f in fileInner {
                if j < received.count, f == received[j] {
                    j += 1
                } else if let last = fileEgress.last, last.count > Self.largestFrame, Self.isFragmentationNeeded(f, answering: last) {
                    fileErrors.append(f)
                } else {
                    fileEgress.append(f)
                }
            }
            #expect(j == received.count, "Ferry's inner capture holds \(j) of the \(received.count) frames received, in order")
            let oversize = fileEgress.filter { $0.count > Self.largestFrame }
            expectSameFrameBytes(fileEgress.filter { $0.count <= Self.largestFrame }, sent,
                                 "inner frames in Ferry's capture (less the oversize) vs the wire's")
            #expect(try stats.drop("oversize_frame") == UInt64(oversize.count), "\(stats)")
            #expect(stats.totalDrops == UInt64(oversize.count), "\(stats.drops())")
            #expect(fileErrors.count == oversize.count, "\(oversize.count) oversize frames, \(fileErrors.count) ICMP errors captured")
            #expect(try stats.counter("icmp_errors_sent") == UInt64(oversize.count), "\(stats)")

            // And the frames Ferry captured as read from its TAP are those the TAP gave it (the
            // tcpdump on ferry0 started a moment after Ferry: it may lack a first frame or two,
            // none of them the test's traffic).
            let missed = fileEgress.count - tapFrames.count
            #expect(missed >= 0 && Array(fileEgress.suffix(tapFrames.count)) == tapFrames.map(\.bytes),
                    "Ferry's inner capture vs tcpdump on h0's ferry0: \(fileEgress.count) vs \(tapFrames.count) frames")
            #expect(fileEgress.prefix(max(0, missed)).allSatisfy { FrameFields.mac($0, at: 6) != a.mac },
                    "tcpdump on ferry0 missed test traffic")

            print("capture test: \(outbound.count) packets h0→h1 and \(inbound.count) h1→h0 on the wire, \(tcpPackets.count) of the "
                  + "TCP flow on source port \(portsByFlow.first { $0.key.hasPrefix(tcpFlow) }?.value.sorted() ?? []); Ferry's file "
                  + "\(ferryFrames.count) frames; \(oversize.count) oversize frames dropped with ICMP; the TAP capture missed \(missed)")

            // --capture-filter icmp: only the inner ICMP frames, though ARP crossed too.
            try checkCaptureFilter(live)
            // No --capture: no file.
            try checkNoCaptureFile(live)
        }

        /// tshark's reading of every packet from h0: UDP checksum good, TTL, DSCP, DF, VNI, ports.
        func checkWithTshark(_ file: String, count: Int) throws {
            let fields = ["udp.checksum.status", "ip.ttl", "ip.dsfield.dscp", "ip.flags.df", "vxlan.vni", "udp.srcport", "udp.dstport"]
            var args = ["-n", "-r", file, "-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
                        "-Y", "ip.src==10.99.0.1", "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]
            for f in fields { args += ["-e", f] }
            let out = try Lab.capture([try Tools.system("tshark")] + args, timeout: 60)
            try #require(out.status == 0, "tshark: \(out.stderr)")
            let rows = out.stdout.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
            #expect(rows.count == count, "tshark saw \(rows.count) packets from h0, the decapsulator \(count)")
            var wrong = IssueTally()
            for (i, r) in rows.enumerated() {
                let what = "packet \(i + 1)"
                guard r.count == fields.count else { wrong.check(false, "fields", "\(what): \(r)"); continue }
                wrong.check(r[0] == "1", "udp.checksum.status (1 is good)", "\(what): \(r[0])")
                wrong.check(r[1] == "33", "ip.ttl", "\(what): \(r[1])")
                wrong.check(r[2] == "8", "ip.dsfield.dscp (0x20 >> 2)", "\(what): \(r[2])")
                wrong.check(["1", "True", "true"].contains(r[3]), "ip.flags.df", "\(what): \(r[3])")
                wrong.check(r[4] == "42", "vxlan.vni", "\(what): \(r[4])")
                wrong.check(UInt16(r[5]).map(Self.ports.contains) == true, "udp.srcport", "\(what): \(r[5])")
                wrong.check(r[6] == "4789", "udp.dstport", "\(what): \(r[6])")
            }
            wrong.expectNone("tshark on the packets from h0")
        }

        /// Ferry with `--capture-filter icmp`, neighbour caches flushed so that ARP crosses the
        /// tunnel again: the file holds the inner ICMP frames and nothing else.
        func checkCaptureFilter(_ live: LiveLab) throws {
            let (h0, h1) = (live.host(0), live.host(1))
            let (a, b) = (h0.containers[0], h1.containers[0])
            let file = live.file("ferry-icmp.pcap")
            try live.startFerry(on: 0, tunnel: Self.tunnelH0, extra: ["--capture", file, "--capture-filter", "icmp"],
                                log: "ferry-h0-icmp.log")
            for ns in [h0.namespace, h1.namespace, a.namespace, b.namespace] {
                try live.exec(ns, ["ip", "neigh", "flush", "all"])
            }
            let ping = try live.ping(from: a.namespace, to: b.address, count: 3)
            #expect(ping.received == 3, "\(ping)")
            let stats = try live.waitForStats(0, timeout: 3) { try $0.counter("flooded_frames") >= 1 }
            #expect(try stats.counter("flooded_frames") >= 1, "no ARP crossed, so the filter was not put to the test: \(stats)")
            live.stopFerry(on: 0)
            let frames = try PcapFileReader(path: file).readAll()
            #expect(frames.count == 6, "3 echo requests and 3 replies expected, the file has \(frames.count)")
            for (i, f) in frames.enumerated() {
                let ip = FrameFields.ipv4(f.bytes)
                #expect(ip?.proto == IPProtocol.icmp, "frame \(i + 1) of the filtered capture: \(FrameFields.describe(f.bytes))")
                #expect(FrameFields.etherType(f.bytes) != EtherType.arp)
                if ip != nil { #expect(!FrameFields.ipv4Address(f.bytes, at: 26).hasPrefix("10.99."), "an outer packet in the filtered capture") }
            }
        }

        /// Ferry without `--capture`, run in an empty directory: it writes no file there and holds
        /// no capture file open.
        func checkNoCaptureFile(_ live: LiveLab) throws {
            let (h0, h1) = (live.host(0), live.host(1))
            let cwd = live.file("no-capture")
            try FileManager.default.createDirectory(atPath: cwd, withIntermediateDirectories: true)
            let ferry = try live.startFerry(on: 0, tunnel: Self.tunnelH0, log: "ferry-h0-nocapture.log", workingDirectory: cwd)
            let ping = try live.ping(from: h0.containers[0].namespace, to: h1.containers[0].address, count: 3)
            #expect(ping.received == 3, "\(ping)")
            let fdDirectory = "/proc/\(ferry.processIdentifier)/fd"
            let open = ((try? FileManager.default.contentsOfDirectory(atPath: fdDirectory)) ?? [])
                .filter { (Int($0) ?? 0) > 2 }
                .compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "\(fdDirectory)/\($0)") }
            #expect(!open.isEmpty, "cannot read Ferry's descriptors in \(fdDirectory)")
            #expect(open.filter { $0.hasPrefix("/") && !$0.hasPrefix("/dev/") }.isEmpty, "Ferry without --capture holds files open: \(open)")
            live.stopFerry(on: 0)
            let left = try FileManager.default.contentsOfDirectory(atPath: cwd)
            #expect(left.isEmpty, "Ferry without --capture wrote \(left) in its working directory")
        }

        /// An IPv4 packet as the kernel sends it from an IP_HDRINCL socket: an identification of 0
        /// means "choose one", so the kernel writes its own (and the header checksum again). Ferry's
        /// IDs start at random, so one packet in 65536 has 0; this test cannot know the kernel's pick,
        /// so for such a packet it takes the wire's ID and checksum as given.
        static func kernelIdentified(_ packet: [UInt8], wire: [UInt8]?) -> [UInt8] {
            guard let wire, packet.count >= 20, wire.count >= 20, packet[4] == 0, packet[5] == 0 else { return packet }
            var p = packet
            for k in [4, 5, 10, 11] { p[k] = wire[k] }
            return p
        }

        /// `frame` is an ICMP "fragmentation needed" for `original`, sent back to its sender, naming
        /// the largest inner IP packet that fits (the largest frame less its Ethernet header).
        static func isFragmentationNeeded(_ frame: [UInt8], answering original: [UInt8]) -> Bool {
            guard let ip = FrameFields.ipv4(frame), ip.proto == IPProtocol.icmp else { return false }
            let icmp = ip.offset + ip.headerLength
            guard frame.count >= icmp + 28, original.count >= 34 else { return false }
            return frame[icmp] == 3 && frame[icmp + 1] == 4
                && Int(FrameFields.u16(frame, icmp + 6)) == largestFrame - 14
                && FrameFields.mac(frame, at: 0) == FrameFields.mac(original, at: 6)
                && Array(frame[(icmp + 8)..<(icmp + 28)]) == Array(original[14..<34])
        }

        /// An ICMP echo request's sequence number and data, if `frame` is one.
        static func echoRequest(_ frame: [UInt8]) -> (sequence: UInt16, data: [UInt8])? {
            guard let ip = FrameFields.ipv4(frame), ip.proto == IPProtocol.icmp else { return nil }
            let icmp = ip.offset + ip.headerLength
            let total = Int(FrameFields.u16(frame, ip.offset + 2))
            guard frame.count >= icmp + 8, frame[icmp] == 8 else { return nil }
            return (FrameFields.u16(frame, icmp + 6), Array(frame[(icmp + 8)..<min(frame.count, ip.offset + total)]))
        }

        func expectSameFrameBytes(_ actual: [[UInt8]], _ expected: [[UInt8]], _ what: String,
                                  sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(actual.count == expected.count, "\(what): \(actual.count) frames, expected \(expected.count)",
                    sourceLocation: sourceLocation)
            var reported = 0
            for (i, (x, e)) in zip(actual, expected).enumerated() where x != e && reported < 5 {
                reported += 1
                Issue.record("\(what): frame \(i + 1) is \(FrameFields.describe(x)), expected \(FrameFields.describe(e))",
                             sourceLocation: sourceLocation)
            }
        }
    }
}
