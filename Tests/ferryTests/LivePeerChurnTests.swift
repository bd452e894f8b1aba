import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// Peers coming and going as fast as accept-any allows: hundreds of spoofed sources (from
    /// the second host's namespace, to the first's Ferry only) cycling through the 256 peer
    /// slots with `--ageing 1`, broadcasts flooded to whoever holds a slot, and `ferry ctl`
    /// polling meanwhile. Ferry lives, and its log holds no sanitizer report: run from a
    /// sanitized build (`swift test --sanitize=thread --scratch-path .build-tsan --filter
    /// LivePeerChurn`), the `ferry` beside the test runner is that build's, and any race
    /// ThreadSanitizer sees in it is written to that log.
    @Suite struct LivePeerChurnTests {
        /// Sends VXLAN (VNI 42, to port 4789) from `count` addresses 10.98.x.y, `wave` of them at
        /// a time, a wave every `gap` seconds, for `seconds`: each a broadcast frame from a MAC of
        /// its own. Prints "sent N" at the end.
        static let senderScript = """
            import socket, struct, sys, time
            target, count, wave, gap, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            def packet(n):
                src = socket.inet_aton("10.98.%d.%d" % (n // 250, n % 250 + 1))
                frame = b"\\xff" * 6 + bytes([2, 0x98, 0, 0, n >> 8, n & 255]) + b"\\x88\\xb5" + bytes(46)
                vxlan = struct.pack("!II", 0x08000000, 42 << 8)
                udp = struct.pack("!HHHH", 40000 + n, 4789, 8 + len(vxlan) + len(frame), 0)
                ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(vxlan) + len(frame), n, 0, 64, 17, 0,
                                 src, socket.inet_aton(target))
                return ip + udp + vxlan + frame
            packets = [packet(n) for n in range(count)]
            sent, start, first = 0, time.time(), 0
            while time.time() - start < seconds:
                for k in range(wave):
                    s.sendto(packets[(first + k) % count], (target, 0))
                    sent += 1
                first = (first + wave) % count
                time.sleep(gap)
            print("sent", sent, flush=True)
            """

        @Test func hundredsOfSourcesCyclingThroughThePeerSlots() throws {
            let live = try LiveLab(tag: "churn", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let (h0, h1) = (live.host(0), live.host(1))
            // The spoofed sources are reached through h1 (where they go unanswered).
            try live.ip(h0.namespace, "route", "add", "10.98.0.0/16", "via", h1.underlay)
            try live.startFerry(on: 0, peers: [], tunnel: ["--encap", "vxlan", "--vni", "42"],
                                extra: ["--accept-any-peer", "--ageing", "1"])
            let sources = 400, seconds = 12.0
            let sender = try live.spawn(h1.namespace, [live.python, "-c", Self.senderScript, h0.underlay, "\(sources)", "40", "0.1",
                                                       "\(seconds)"], log: "sender.log")
            // Broadcasts from h0's side: each is flooded to every peer holding a slot.
            let flood = try live.spawn(live.container(0).namespace,
                                       ["ping", "-b", "-q", "-i", "0.02", "-w", "\(Int(seconds))", "10.17.255.255"], log: "flood.log")
            var polls = 0, mostPeers = 0
            while sender.isRunning {
                let stats = try live.stats(0)
                _ = try live.fdb(0)
                mostPeers = max(mostPeers, stats.peers.count)
                polls += 1
            }
            flood.waitUntilExit()
            let stats = try live.stats(0)
            let log = (try? String(contentsOfFile: live.ferryLog(0), encoding: .utf8)) ?? ""
            let statuses = live.stopFerries()
            let learned = try stats.counter("peers_learned"), retired = try stats.counter("peers_retired")
            print("[live peer churn] \(sources) sources: \(learned) peers learned, \(retired) retired, at most \(mostPeers) in slots, "
                  + "\(try stats.counter("sent_packets")) packets sent, \(try stats.counter("received_packets")) received, "
                  + "\(polls) stats+fdb polls; ferry exit \(statuses[0].map(String.init) ?? "?")")
            #expect(learned > 256, "the slots never changed hands: \(stats)")
            #expect(retired > 0, "\(stats)")
            #expect(try stats.counter("sent_packets") > 0, "nothing flooded to the learned peers: \(stats)")
            #expect(polls > 0)
            #expect(statuses[0] == 0, "Ferry did not end cleanly: \(live.logTail(0))")
            #expect(!log.contains("ThreadSanitizer") && !log.contains("AddressSanitizer"), "\(String(log.prefix(6000)))")
        }
    }
}
