import FerryCapture
import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// Issue 12, item 3: a third host sends hostile traffic (`HostileTraffic`) at the highest
    /// rate one Python process reaches, for `duration` seconds, at h1, while TCP transfers run
    /// from h0's container to h1's through Ferry (VXLAN, VNI 42). h1 runs in accept-any mode
    /// limited to h0's address (`--accept-cidr 10.99.0.1/32`), the mode in which inner frames
    /// claiming a local MAC are refused.
    ///
    /// What is asserted: every transfer completes with its SHA-256; no hostile inner frame
    /// reaches h1's TAP or its container (captures filtered on the hostile EtherType); Ferry's
    /// RSS does not grow; and Ferry's drop counters account for the hostile packets: the classes
    /// that reach Ferry's socket are counted under their named reasons, exactly when the kernel
    /// lost none on the way (`lostOnTheWay` = UDP RcvbufErrors on h1 plus every drop counter of
    /// the underlay's veths and bridge ports: each includes tunnel packets of the transfer too,
    /// so it bounds the hostile packets lost from above), else within that bound; the classes the
    /// kernel drops (bad UDP checksum, incomplete fragments, random IP, random frames) are counted
    /// by no reason of Ferry's, and each exactly (within what was lost on the way) by the kernel
    /// counter that counts it: Udp InCsumErrors, Ip ReasmFails, Ip InUnknownProtos, and h1's
    /// u0 rx_dropped. The oversized class reaches Ferry whole (Ip ReasmOKs) and is refused as
    /// oversize_frame. The test takes ~40 s with the 30 s attack.
    ///
    /// The same attack on GRE (key 42): GRE arrives on a raw IPPROTO_GRE socket (the kernel
    /// here has no GRE module, so nothing else takes it), and the GRE classes are GRE's own
    /// (`HostileTraffic.greClasses`: truncated and corrupted headers, wrong or missing keys, a
    /// checksum that does not verify, every optional field present, protocol types other than
    /// Ethernet). What the kernel loses on the way to that socket is its drop count
    /// (/proc/net/raw); there is no UDP checksum for the kernel to check.
    @Suite struct LiveHostileTrafficTests {
        /// How long the attack lasts: 30 s, as the issue asks, on either tunnel;
        /// `FERRY_HOSTILE_SECONDS` sets both.
        static var duration: Double {
            ProcessInfo.processInfo.environment["FERRY_HOSTILE_SECONDS"].flatMap(Double.init) ?? 30
        }
        /// Each transfer; they are repeated while the attack lasts.
        static let transferBytes = 16 * Live.mebibyte
        /// RSS growth allowed from the sample at half time to any later one (and the end). The
        /// first half is left out: Ferry's buffers are allocated at start but their pages are
        /// touched when a packet first needs them (a 4 KiB datagram touches more of its receive
        /// slot than a 1.5 KiB one), which the first run showed as steps of up to 3 MiB in the
        /// first 16 s. The hostile packets make Ferry keep nothing (no peer, no MAC), so growth
        /// in the second half should be 0; a leak of one heap block (at least 32 bytes) per
        /// packet at ~20k packets/s reaching Ferry would add ~10 MiB in 15 s, one block per
        /// 5 packets still 2 MiB.
        static let rssGrowthBound = 2 * Live.mebibyte

        @Test func ferryKeepsForwardingAndCountsEveryHostilePacket() throws {
            try attack(.vxlan)
        }

        @Test func greFerryKeepsForwardingAndCountsEveryHostilePacket() throws {
            try attack(.gre)
        }

        func attack(_ encapsulation: LiveTunnel) throws {
            let classes = HostileTraffic.classes(encapsulation)
            let duration = Self.duration
            let live = try LiveLab(tag: "hostile-\(encapsulation.rawValue)", hosts: 3, withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let (h0, h1, h2) = (live.host(0), live.host(1), live.host(2))
            let (a, b) = (h0.containers[0], h1.containers[0])
            // Spoofed sources from 10.100.0.0/16 must reach h1's socket: no reverse-path filter.
            for key in ["all", "default", "u0"] { try live.exec(h1.namespace, ["sysctl", "-qw", "net.ipv4.conf.\(key).rp_filter=0"]) }
            // The kernel checks UDP checksums itself (a veth trusts what a local socket sent).
            try live.exec(h1.namespace, ["ethtool", "-K", "u0", "rx", "off"])
            // Incomplete fragments expire in 1 s (so that the kernel's count of them is read in time).
            try live.exec(h1.namespace, ["sysctl", "-qw", "net.ipv4.ipfrag_time=1"])
            let tunnel = encapsulation.arguments
            try live.startFerry(on: 0, peers: [1], tunnel: tunnel)
            let ferry = try live.startFerry(on: 1, peers: [0], tunnel: tunnel,
                                            extra: ["--accept-any-peer", "--accept-cidr", "\(h0.underlay)/32"])
            let warm = try live.ping(from: a.namespace, to: b.address, count: 3)
            try #require(warm.received >= 1, "no ping through Ferry: \(warm)")
            // (h1's container answered through the TAP: its MAC is local to h1's Ferry from now on.)

            let targetMAC = try live.macAddress(h1.namespace, "u0")
            let etherFilter = "ether proto 0x\(String(HostileTraffic.etherType, radix: 16))"
            let tapCapture = try Tcpdump(live, h1.namespace, interface: "ferry0", file: live.file("tap.pcap"), filter: etherFilter)
            let containerCapture = try Tcpdump(live, b.namespace, interface: "eth0", file: live.file("container.pcap"), filter: etherFilter)

            let before = try live.stats(1)
            let snmpBefore = try live.snmp(h1.namespace)
            let lostBefore = try Self.underlayDrops(live) + Self.rawSocketDrops(live, encapsulation)
            let noHandlerBefore = try live.linkStatistics(h1.namespace, "u0")["rx.dropped"] ?? 0
            let rssStart = try Self.rss(ferry.processIdentifier)

            // The attack, in the background.
            let scriptPath = live.file("hostile.py"), reportPath = live.file("hostile.json")
            try HostileTraffic.script(encapsulation).write(toFile: scriptPath, atomically: true, encoding: .utf8)
            let attackStarted = Date()
            let attacker = try live.spawn(h2.namespace, [live.python, scriptPath, String(duration), reportPath,
                                                         h1.underlay, h0.underlay, h2.underlay, targetMAC, b.mac, "42", "u0"],
                                          log: "hostile.log")
            defer { if attacker.isRunning { attacker.terminate() } }

            // RSS sampled once a second on a thread of its own while transfers run here.
            let samples = RSSSamples()
            let sampler = Thread {
                while attacker.isRunning {
                    if let r = try? Self.rss(ferry.processIdentifier) { samples.append(Date().timeIntervalSince(attackStarted), r) }
                    Thread.sleep(forTimeInterval: 1)
                }
            }
            sampler.start()

            var transfers: [TransferResult] = []
            var port = 5201
            while attacker.isRunning, transfers.count < 200 {
                let t = try live.transfer(bytes: Self.transferBytes, from: a.namespace, to: b.namespace, address: b.address, port: port)
                transfers.append(t)
                port += 1
            }
            let transfersDuringAttack = transfers.count
            #expect(Lab.waitUntil(timeout: duration + 30) { !attacker.isRunning }, "the hostile sender did not end")
            // One more after the attack: forwarding still works.
            transfers.append(try live.transfer(bytes: Self.transferBytes, from: a.namespace, to: b.namespace, address: b.address, port: port))

            let report = try JSONDecoder().decode(HostileTraffic.Report.self, from: Data(contentsOf: URL(fileURLWithPath: reportPath)))
            // The packets in flight and the incomplete fragments' expiry (1 s) settle.
            let sentToFerry = classes.filter { $0.fate == .ferryDrops }.reduce(UInt64(0)) { $0 + (report.sent[$1.name] ?? 0) }
            let hostileReasons = classes.reduce(into: Set<String>()) { $0.formUnion($1.reasons) }
            func hostileDrops(_ s: CtlStats) -> UInt64 { hostileReasons.reduce(0) { $0 + (s.drops[$1] ?? 0) } }
            _ = try live.waitForStats(1, timeout: 5) { hostileDrops($0) - hostileDrops(before) >= sentToFerry }
            usleep(2_500_000)
            let after = try live.stats(1)
            let snmpAfter = try live.snmp(h1.namespace)
            let lostAfter = try Self.underlayDrops(live) + Self.rawSocketDrops(live, encapsulation)
            let noHandler = (try live.linkStatistics(h1.namespace, "u0")["rx.dropped"] ?? 0) - noHandlerBefore
            let rssEnd = try Self.rss(ferry.processIdentifier)
            let tapFrames = try tapCapture.stop()
            let containerFrames = try containerCapture.stop()
            #expect(ferry.isRunning, "h1's Ferry exited under attack: \(live.logTail(1))")

            // 1. Ferry kept forwarding.
            #expect(transfersDuringAttack >= 1, "no transfer completed during the attack")
            for t in transfers {
                #expect(t.receivedBytes == t.bytes && t.sentSHA256 == t.receivedSHA256, "a transfer under attack: \(t)")
            }

            // 2. No hostile inner frame reached the bridge side.
            // (Counts, never the frames themselves, in the expectations: a failure prints its operands.)
            let tapLeaks = tapFrames.count, containerLeaks = containerFrames.count
            let tapExamples = tapFrames.prefix(5).map { FrameFields.describe($0.bytes) }
            let containerExamples = containerFrames.prefix(5).map { FrameFields.describe($0.bytes) }
            #expect(tapLeaks == 0, "hostile frames written to h1's TAP: \(tapExamples)")
            #expect(containerLeaks == 0, "hostile frames reached h1's container: \(containerExamples)")

            // 3. Memory.
            let rss = samples.values
            let baseline = rss.first { $0.at >= duration / 2 }?.bytes ?? rssStart
            let peak = rss.filter { $0.at >= duration / 2 }.map(\.bytes).max() ?? rssStart
            #expect(rss.count >= Int(duration) / 2, "too few RSS samples: \(rss.count)")
            #expect(max(peak, rssEnd) <= baseline + Self.rssGrowthBound,
                    "Ferry's RSS grew in the second half of the attack: start \(rssStart), at half time \(baseline), peak \(peak), end \(rssEnd)")

            // 4. The books.
            func delta(_ name: String) -> UInt64 { (after.drops[name] ?? 0) - (before.drops[name] ?? 0) }
            func snmp(_ key: String) -> Int { (snmpAfter[key] ?? 0) - (snmpBefore[key] ?? 0) }
            let lost = UInt64(snmp("Udp:RcvbufErrors") + (lostAfter - lostBefore))
            let counted = hostileDrops(after) - hostileDrops(before)
            var byReason: [String: UInt64] = [:]
            for reason in after.drops.keys where delta(reason) > 0 { byReason[reason] = delta(reason) }
            let unexpected = byReason.filter { !hostileReasons.contains($0.key) }
            #expect(unexpected.isEmpty, "drops under reasons no hostile class has: \(unexpected)")
            if lost == 0 {
                #expect(counted == sentToFerry, "Ferry counted \(counted) hostile drops; \(sentToFerry) reached it (the kernel lost none)")
            } else {
                #expect(counted <= sentToFerry && counted + lost >= sentToFerry,
                        "Ferry counted \(counted) hostile drops; \(sentToFerry) sent, at most \(lost) lost before Ferry")
            }
            // Per class where the reason is the class's alone.
            for c in classes where c.fate == .ferryDrops && c.reasons.count == 1 {
                let reason = c.reasons.first!
                let n = report.sent[c.name] ?? 0
                let others = classes.filter { $0.name != c.name && $0.reasons.contains(reason) }
                    .reduce(UInt64(0)) { $0 + (report.sent[$1.name] ?? 0) }
                let got = delta(reason)
                if others == 0 {
                    #expect(got <= n && got + lost >= n, "\(c.name): \(got) counted under \(reason), \(n) sent, \(lost) lost on the way")
                } else {
                    #expect(got <= n + others, "\(reason): \(got) counted, at most \(n + others) sent")
                }
            }
            // Per group of classes linked by a reason they share: the group's reasons count its packets.
            for g in HostileTraffic.groups(classes) where g.classes.count > 1 {
                let n = g.classes.reduce(UInt64(0)) { $0 + (report.sent[$1] ?? 0) }
                let got = g.reasons.reduce(UInt64(0)) { $0 + delta($1) }
                #expect(got <= n && got + lost >= n, "\(g.classes): \(got) counted under \(g.reasons.sorted()), \(n) sent, \(lost) lost on the way")
            }
            // The kernel's classes, each against the one counter of the kernel's that counts it:
            // exact when nothing was lost on the way, else within what was.
            func kernelCounts(_ name: String, _ counter: Int, _ what: String) {
                let n = Int(report.sent[name] ?? 0), slack = Int(lost)
                #expect(counter >= n - slack && counter <= n + slack, "\(name): sent \(n), \(what) \(counter), lost on the way \(slack)")
            }
            if encapsulation == .vxlan { kernelCounts("bad_checksum", snmp("Udp:InCsumErrors"), "Udp InCsumErrors") }
            kernelCounts("random_ip", snmp("Ip:InUnknownProtos"), "Ip InUnknownProtos")
            // Each incomplete first fragment fails once: as a duplicate of a queue it joins, or
            // when its queue expires; an oversized packet that lost a fragment on the way too.
            kernelCounts("incomplete_fragment", snmp("Ip:ReasmFails"), "Ip ReasmFails")
            kernelCounts("oversized", snmp("Ip:ReasmOKs"), "Ip ReasmOKs")
            // Random frames of an unknown EtherType: dropped by h1's stack, which counts them on the link.
            let randomFrames = report.sent["random_frame"] ?? 0
            #expect(UInt64(max(noHandler, 0)) + lost >= randomFrames && UInt64(max(noHandler, 0)) <= randomFrames,
                    "random frames: sent \(randomFrames), h1's u0 rx_dropped \(noHandler)")
            #expect(after.peers.map(\.address) == [h0.underlay], "the peer table changed under attack: \(after)")
            #expect(try after.counter("peers_learned") == before.counter("peers_learned"), "\(after)")

            let total = report.sent.values.reduce(0, +)
            let lines = [
                "[live hostile \(encapsulation.rawValue)] attack \(String(format: "%.1f", report.seconds)) s: \(total) hostile packets "
                    + "(\(report.wirePackets) on the wire, \(Int(Double(report.wirePackets) / report.seconds)) packets/s), "
                    + "\(report.sendErrors) sends refused",
                "  sent: " + report.sent.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "),
                "  ferry drops: " + byReason.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "),
                "  counted \(counted) of \(sentToFerry) that reach Ferry; lost on the way \(lost) (UdpRcvbufErrors \(snmp("Udp:RcvbufErrors")), "
                    + "underlay link\(encapsulation == .gre ? " and raw socket" : "") drops \(lostAfter - lostBefore)); h1 u0 rx_dropped \(noHandler)",
                "  kernel: UdpInCsumErrors \(snmp("Udp:InCsumErrors")) UdpInErrors \(snmp("Udp:InErrors")) IpReasmFails \(snmp("Ip:ReasmFails")) "
                    + "IpReasmTimeout \(snmp("Ip:ReasmTimeout")) IpReasmOKs \(snmp("Ip:ReasmOKs")) IpInUnknownProtos \(snmp("Ip:InUnknownProtos")) "
                    + "IpInHdrErrors \(snmp("Ip:InHdrErrors"))",
                "  rss: start \(rssStart) end \(rssEnd) samples " + rss.map { "\(Int($0.at))s:\($0.bytes / 1024)K" }.joined(separator: " "),
                "  transfers: \(transfers.count) of \(Self.transferBytes) bytes (\(transfersDuringAttack) during the attack): "
                    + transfers.map { String(format: "%.2fs", $0.seconds) }.joined(separator: " ") + "; last sha256 \(transfers.last?.receivedSHA256 ?? "")",
                "  h1 rx from h0 \(after.rx(h0.underlay) - before.rx(h0.underlay)) packets",
            ]
            print(lines.joined(separator: "\n"))
        }

        final class RSSSamples: @unchecked Sendable {
            let lock = NSLock()
            var list: [(at: Double, bytes: Int)] = []
            func append(_ at: Double, _ bytes: Int) { lock.withLock { list.append((at, bytes)) } }
            var values: [(at: Double, bytes: Int)] { lock.withLock { list } }
        }

        /// VmRSS of a process, in bytes.
        static func rss(_ pid: Int32) throws -> Int {
            let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                  let kib = Int(line.split(whereSeparator: \.isWhitespace)[1])
            else { throw UnexpectedOutput("no VmRSS in /proc/\(pid)/status") }
            return kib * 1024
        }

        /// What the raw GRE sockets in h1 dropped so far (their receive queues full): the `drops`
        /// column of /proc/net/raw for protocol 47. 0 for VXLAN.
        static func rawSocketDrops(_ live: LiveLab, _ encapsulation: LiveTunnel) throws -> Int {
            guard encapsulation == .gre else { return 0 }
            let table = try live.exec(live.host(1).namespace, ["cat", "/proc/net/raw"]).stdout
            var total = 0
            for line in table.split(separator: "\n").dropFirst() {
                let fields = line.split(whereSeparator: \.isWhitespace)
                // "sl local_address rem_address st … drops": the local address is ADDR:PROTOCOL in hex.
                guard fields.count >= 13, fields[1].hasSuffix(":002F"), let drops = Int(fields[fields.count - 1]) else { continue }
                total += drops
            }
            return total
        }

        /// Every packet the underlay's links dropped so far: rx and tx drops of h1's and h2's
        /// legs and of the switch's ports towards them.
        static func underlayDrops(_ live: LiveLab) throws -> Int {
            var total = 0
            for (ns, dev) in [(live.host(1).namespace, "u0"), (live.host(2).namespace, "u0"),
                              (live.lab.switchNamespace, "p1"), (live.lab.switchNamespace, "p2")] {
                let s = try live.linkStatistics(ns, dev)
                // h1's own rx_dropped is its stack's (no handler for an EtherType): the random frames'.
                let rxDropped = ns == live.host(1).namespace ? 0 : (s["rx.dropped"] ?? 0)
                total += rxDropped + (s["tx.dropped"] ?? 0) + (s["rx.errors"] ?? 0) + (s["tx.errors"] ?? 0)
            }
            return total
        }
    }
}
