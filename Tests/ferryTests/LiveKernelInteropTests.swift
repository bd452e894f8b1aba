import FerryCapture
import FerryLab
import FerryWire
import Foundation
import Testing

extension LiveLabTests {
    /// Ferry against the Linux vxlan device as its peer: host h0 runs Ferry, host h1 a kernel
    /// `vxlan id 42` on its bridge. Both must understand each other's packets, checksums
    /// included, and each must learn the other's containers. Every veth keeps its default
    /// offloads (checksum offload on), so the kernel's inner TCP/UDP checksums reach Ferry
    /// partial (the pseudo-header sum: CHECKSUM_PARTIAL is never finished between namespaces),
    /// as they would from a container's interface or a kind-style node.
    @Suite struct LiveKernelInteropTests {
        struct Case: Sendable, CustomTestStringConvertible, CustomStringConvertible {
            var ipv6Underlay: Bool
            /// `--udp-csum` (true), `--no-udp-csum` (false) or neither (nil) on Ferry. Neither: a
            /// checksum, as offloads are on by default and UDP GSO needs one; `--no-udp-csum` sends
            /// zero over IPv4 through the raw path; IPv6 always has one.
            var udpChecksumFlag: Bool?
            var flag: [String] { udpChecksumFlag.map { $0 ? ["--udp-csum"] : ["--no-udp-csum"] } ?? [] }
            var description: String { "kernel vxlan over IPv\(ipv6Underlay ? 6 : 4)" + (flag.first.map { ", ferry \($0)" } ?? "") }
            var testDescription: String { description }
            var tag: String { "kx\(ipv6Underlay ? 6 : 4)" + (udpChecksumFlag.map { $0 ? "c" : "n" } ?? "") }
            /// Ferry puts a UDP checksum on what it sends.
            var ferrySendsChecksum: Bool { (udpChecksumFlag ?? true) || ipv6Underlay }
        }

        static let cases: [Case] = [
            Case(ipv6Underlay: false, udpChecksumFlag: nil),
            Case(ipv6Underlay: false, udpChecksumFlag: false),
            Case(ipv6Underlay: false, udpChecksumFlag: true),
            Case(ipv6Underlay: true, udpChecksumFlag: nil),
        ]

        static let transferBytes = 64 * Live.mebibyte

        @Test(arguments: cases)
        func ferryAndKernelVXLANInteroperate(_ c: Case) throws {
            let live = try LiveLab(tag: c.tag, ipv6Underlay: c.ipv6Underlay)
            defer { live.teardown() }
            try live.build()
            let (h0, h1) = (live.host(0), live.host(1))
            let (a, b) = (live.container(0), live.container(1))
            let mtu = LiveTunnel.vxlan.innerMTU(ipv6Underlay: c.ipv6Underlay)

            // h1: the kernel's vxlan device on bridge0, learning, as `ip link` sets it up by default
            // (over IPv6 it sends UDP checksums and refuses zero ones). No veth's offloads are
            // touched: the kernel's inner checksums arrive partial, and Ferry must hand them to
            // its TAP as such (NEEDS_CSUM), or h0c0 drops the kernel's TCP segments as corrupt.
            for ns in [h0.namespace, h1.namespace] {
                let k = try live.lab.run(["ip", "netns", "exec", ns, "ethtool", "-k", "u0"]).stdout
                try #require(k.contains("tx-checksum-ip-generic: on"), "\(c): \(ns)'s u0 lost its checksum offload:\n\(k)")
            }
            try live.ip(h1.namespace, "link", "add", "vx0", "type", "vxlan", "id", "42", "local", h1.underlay,
                        "remote", h0.underlay, "dstport", "4789", "dev", "u0", "learning")
            try live.ip(h1.namespace, "link", "set", "vx0", "mtu", String(mtu))
            try live.ip(h1.namespace, "link", "set", "vx0", "master", "bridge0")
            try live.ip(h1.namespace, "link", "set", "vx0", "up")

            try live.startFerry(on: 0, tunnel: LiveTunnel.vxlan.arguments, extra: c.flag)
            #expect(try live.mtu(h0.namespace, "ferry0") == mtu, "\(c): Ferry's TAP MTU")
            let snmpBefore = try live.snmp(h1.namespace)

            // The outer packets each side sends, as seen on h1's underlay.
            let capture = (live.logs as NSString).appendingPathComponent("u0.pcap")
            let tcpdumpLog = (live.logs as NSString).appendingPathComponent("tcpdump.log")
            let tcpdump = try live.lab.spawn(h1.namespace, ["tcpdump", "-i", "u0", "-nn", "-U", "-c", "40", "-w", capture,
                                                            "udp", "port", "4789"], log: tcpdumpLog)
            defer { if tcpdump.isRunning { tcpdump.terminate() } }
            let listening = Lab.waitUntil(timeout: 10) {
                ((try? String(contentsOfFile: tcpdumpLog, encoding: .utf8)) ?? "").contains("listening on") || !tcpdump.isRunning
            }
            #expect(listening && tcpdump.isRunning, "\(c): tcpdump did not start: \((try? String(contentsOfFile: tcpdumpLog, encoding: .utf8)) ?? "")")

            let there = try live.ping(from: a.namespace, to: b.address)
            #expect(there.allReceived, "\(c): ping \(a.address) -> \(b.address): \(there)\nferry:\n\(live.logTail(0))")
            let back = try live.ping(from: b.namespace, to: a.address)
            #expect(back.allReceived, "\(c): ping \(b.address) -> \(a.address): \(back)\nferry:\n\(live.logTail(0))")
            try #require(there.received > 0 && back.received > 0, "\(c): no connectivity between Ferry and the kernel vxlan")
            if !Lab.waitUntil(timeout: 5, { !tcpdump.isRunning }) { tcpdump.terminate() }
            tcpdump.waitUntilExit()
            try checkOuterChecksums(capture, c, ferry: h0.underlay, kernel: h1.underlay)

            // TCP both ways, each checked end to end.
            let t1 = try live.transfer(bytes: Self.transferBytes, from: a.namespace, to: b.namespace, address: b.address,
                                       port: 5201, timeout: 120)
            #expect(t1.receivedBytes == Self.transferBytes && t1.receivedSHA256 == t1.sentSHA256, "\(c): Ferry -> kernel: \(t1)")
            let t2 = try live.transfer(bytes: Self.transferBytes, from: b.namespace, to: a.namespace, address: a.address,
                                       port: 5202, timeout: 120)
            #expect(t2.receivedBytes == Self.transferBytes && t2.receivedSHA256 == t2.sentSHA256, "\(c): kernel -> Ferry: \(t2)")
            print("[live \(c)] ping ferry->kernel rtt \(there.rtt ?? "-"), kernel->ferry rtt \(back.rtt ?? "-"); "
                  + "TCP \(Self.transferBytes / Live.mebibyte) MiB ferry->kernel \(String(format: "%.2f", t1.seconds)) s, "
                  + "kernel->ferry \(String(format: "%.2f", t2.seconds)) s, SHA-256 equal both ways: "
                  + "\(t1.receivedSHA256 == t1.sentSHA256 && t2.receivedSHA256 == t2.sentSHA256)")

            // Ferry's side: traffic from the kernel peer, nothing refused while decapsulating,
            // nothing dropped but oversize frames (PMTU discovery for the 1500-byte containers).
            let s = try live.stats(0)
            print("[live \(c)] ferry \(s)")
            let peer = try #require(s.peer(h1.underlay), "\(c): no peer \(h1.underlay): \(s)")
            #expect(peer.rxBytes > UInt64(Self.transferBytes), "\(c): rx from the kernel peer: \(s)")
            #expect(peer.txBytes > UInt64(Self.transferBytes), "\(c): tx to the kernel peer: \(s)")
            let decapDrops = s.drops.filter { decapsulationDropNames.contains($0.key) && $0.value > 0 }
            #expect(decapDrops.isEmpty, "\(c): Ferry refused the kernel's packets: \(decapDrops)")
            #expect(s.drops(except: ["oversize_frame"]).isEmpty, "\(c): ferry drops: \(s)")
            // The kernel's partial checksums took the NEEDS_CSUM path (its SYN, ACKs, ... at least).
            let partials = try s.counter("partial_checksums")
            print("[live \(c)] ferry partial_checksums \(partials)")
            #expect(partials > 0, "\(c): no partial checksum from the kernel reached Ferry's TAP path: \(s)")
            let f0 = try live.fdb(0)
            #expect(f0.contains { $0.mac.lowercased() == b.mac && Live.sameAddress($0.peer, h1.underlay) },
                    "\(c): Ferry did not learn \(b.mac) behind \(h1.underlay): \(f0)")

            // The kernel's side: it accepted every packet of Ferry's (checksums included) and
            // learnt h0c0 behind Ferry's address.
            let snmp = try live.snmp(h1.namespace)
            for key in ["UdpInCsumErrors", "UdpInErrors", "Udp6InCsumErrors", "Udp6InErrors"] {
                #expect(snmp[key, default: 0] == snmpBefore[key, default: 0], "\(c): h1 \(key) went from \(snmpBefore[key, default: 0]) to \(snmp[key, default: 0])")
            }
            let vx = try live.linkStatistics(h1.namespace, "vx0")
            print("[live \(c)] kernel vx0 \(vx.sorted { $0.key < $1.key }.filter { $0.value > 0 }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))")
            #expect(vx["rx.errors", default: -1] == 0 && vx["rx.dropped", default: -1] == 0, "\(c): kernel vx0: \(vx)")
            #expect(vx["rx.bytes", default: 0] > Self.transferBytes, "\(c): kernel vx0: \(vx)")
            let fdb = try live.lab.run(["bridge", "-n", h1.namespace, "fdb", "show", "dev", "vx0"]).stdout
            #expect(fdb.split(separator: "\n").contains { $0.hasPrefix(a.mac) && $0.contains("dst \(h0.underlay)") },
                    "\(c): the kernel did not learn \(a.mac) behind \(h0.underlay):\n\(fdb)")

            for (i, status) in live.stopFerries() {
                #expect(status == 0, "\(c): ferry on h\(i) exited \(status) on SIGINT:\n\(live.logTail(i))")
            }
        }

        /// tshark's verdict on the outer UDP checksums captured on h1's u0: Ferry's as configured
        /// (zero over IPv4 unless --udp-csum, else correct), the kernel's correct. With checksum
        /// offload on the veths, a sum either side left to the device is seen partial (the
        /// pseudo-header sum, which tshark calls bad): accepted when FerryWire's decapsulator,
        /// reading the same frame, finds exactly that.
        func checkOuterChecksums(_ capture: String, _ c: Case, ferry: String, kernel: String,
                                 sourceLocation: SourceLocation = #_sourceLocation) throws {
            let tshark = try Tools.system("tshark")
            let fields = ["ip.src", "ipv6.src", "udp.checksum", "udp.checksum.status", "vxlan.vni", "frame.number"]
            let frames = try PcapFileReader(path: capture).readAll().map(\.bytes)
            func isPartial(_ number: String) -> Bool {
                guard let n = Int(number), n >= 1, n <= frames.count else { return false }
                let result = frames[n - 1].withUnsafeBytes {
                    Decapsulator(policy: DecapsulationPolicy(vni: 42, udpChecksum: .report)).decapsulate(frame: $0)
                }
                return result.packet?.udpChecksum == .partial
            }
            var partial = (ferry: 0, kernel: 0)
            var arguments = ["-n", "-r", capture, "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "occurrence=f"]
            for f in fields { arguments += ["-e", f] }
            let o = try Lab.capture([tshark] + arguments, timeout: 60)
            try #require(o.status == 0, "\(c): tshark: \(o.stderr)", sourceLocation: sourceLocation)
            var fromFerry = 0, fromKernel = 0
            for line in o.stdout.split(separator: "\n") {
                let v = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
                guard v.count == fields.count else { continue }
                let source = v[0].isEmpty ? v[1] : v[0]
                let checksum = parseInt(v[2]) ?? -1, status = Int(v[3]) ?? -1
                #expect(v[4] == "42", "\(c): VNI \(v[4]) in \(line)", sourceLocation: sourceLocation)
                // Wireshark's checksum status: 0 bad, 1 good, 2 unverified, 3 not present.
                let leftPartial = status == 0 && isPartial(v[5])
                if Live.sameAddress(source, ferry) {
                    fromFerry += 1
                    if leftPartial { partial.ferry += 1 }
                    if c.ferrySendsChecksum {
                        #expect(checksum != 0 && (status == 1 || leftPartial), "\(c): Ferry's UDP checksum: \(line)",
                                sourceLocation: sourceLocation)
                    } else {
                        #expect(checksum == 0, "\(c): Ferry sent a UDP checksum with --no-udp-csum: \(line)", sourceLocation: sourceLocation)
                    }
                } else if Live.sameAddress(source, kernel) {
                    fromKernel += 1
                    if leftPartial { partial.kernel += 1 }
                    #expect(checksum == 0 || status == 1 || leftPartial, "\(c): the kernel's UDP checksum: \(line)",
                            sourceLocation: sourceLocation)
                }
            }
            print("[live \(c)] outer UDP checksums captured: \(fromFerry) from Ferry (\(partial.ferry) partial), "
                  + "\(fromKernel) from the kernel (\(partial.kernel) partial)")
            #expect(fromFerry > 0 && fromKernel > 0, "\(c): captured \(fromFerry) from Ferry, \(fromKernel) from the kernel:\n\(o.stdout)",
                    sourceLocation: sourceLocation)
        }
    }
}
