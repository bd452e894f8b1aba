import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// UDP segmentation offload on the TAP: a container that sends with UDP GSO hands its TAP
    /// (through the bridge) UDP super-frames, which Ferry cuts into datagrams; on the far side
    /// Ferry joins the datagrams again into super-frames for its TAP, and the receiving
    /// container gets every datagram, whole and in order.
    @Suite struct LiveUDPOffloadTests {
        static let datagrams = 40, sends = 25, size = 1000

        /// Sends `sends` GSO writes of `datagrams` datagrams of `size` bytes, each datagram
        /// starting with its number, the rest a pattern of it.
        static let sender = #"""
        import socket, struct, sys, time
        address, port, sends, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((address, port))
        n = 0
        for _ in range(sends):
            data = b"".join(struct.pack("!I", n + i) + bytes([(n + i) % 251]) * (size - 4) for i in range(count))
            s.sendmsg([data], [(socket.SOL_UDP, 103, struct.pack("=H", size))])  # UDP_SEGMENT
            n += count
            time.sleep(0.02)
        """#

        /// Receives until `total` datagrams or a quiet second; prints how many were right, and
        /// whether they came in order.
        static let receiver = #"""
        import socket, struct, sys
        address, port, total, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((address, port))
        print("listening", flush=True)
        s.settimeout(10)
        good = 0; expected = 0; ordered = True
        try:
            while good < total:
                d = s.recv(65535)
                s.settimeout(1)
                n = struct.unpack("!I", d[:4])[0]
                if len(d) == size and d[4:] == bytes([n % 251]) * (size - 4):
                    good += 1
                ordered = ordered and n == expected
                expected = n + 1
        except socket.timeout:
            pass
        print("received %d ordered %s" % (good, ordered), flush=True)
        """#

        @Test func gsoSendsCrossWholeAndAreJoinedAgain() throws {
            let live = try LiveLab(tag: "uso")
            defer { live.teardown() }
            try live.build()
            for i in 0..<2 { try live.startFerry(on: i, tunnel: LiveTunnel.vxlan.arguments, extra: ["--workers", "1"]) }
            let (a, b) = (live.container(0), live.container(1))
            let ping = try live.ping(from: a.namespace, to: b.address, count: 3)
            try #require(ping.allReceived, "\(ping)")
            let before0 = try live.stats(0), before1 = try live.stats(1)

            let total = Self.datagrams * Self.sends
            let log = (live.logs as NSString).appendingPathComponent("uso-receiver.log")
            let server = try live.lab.spawn(b.namespace, [live.python, "-c", Self.receiver, b.address, "6000", String(total),
                                                          String(Self.size)], log: log)
            defer { if server.isRunning { server.terminate() } }
            func output() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
            try #require(Lab.waitUntil(timeout: 15, interval: 0.05) { output().contains("listening") || !server.isRunning })
            let sent = try live.lab.attempt(a.namespace, [live.python, "-c", Self.sender, b.address, "6000", String(Self.sends),
                                                          String(Self.datagrams), String(Self.size)], timeout: 60)
            #expect(sent.status == 0, "the GSO sender failed: \(sent.stderr)")
            try #require(Lab.waitUntil(timeout: 20, interval: 0.1) { !server.isRunning }, "receiver: \(output())")
            #expect(output().contains("received \(total) ordered True"), "receiver: \(output())")

            let s0 = try live.stats(0), s1 = try live.stats(1)
            print("[live uso] h0 \(s0)\n[live uso] h1 \(s1)")
            // h0's TAP handed over UDP super-frames (GSO writes of 40 datagrams), cut by Ferry.
            let superFrames = try s0.counter("tap_super_frames") - before0.counter("tap_super_frames")
            let cut = try s0.counter("tap_super_frame_segments") - before0.counter("tap_super_frame_segments")
            #expect(superFrames >= UInt64(Self.sends / 2) && cut >= UInt64(total / 2),
                    "h0 cut \(cut) datagrams from \(superFrames) super-frames: \(s0)")
            // h1 joined datagrams again for its TAP: far fewer writes than datagrams.
            let joined = try s1.counter("coalesced_segments") - before1.counter("coalesced_segments")
            let writes = try s1.counter("tap_tx_frames") - before1.counter("tap_tx_frames")
            #expect(joined >= UInt64(total / 2) && writes < UInt64(total / 2), "h1 joined \(joined) in \(writes) writes: \(s1)")
            #expect(s0.drops(except: ["oversize_frame"]).isEmpty && s1.drops().isEmpty, "drops: \(s0) / \(s1)")
        }
    }
}
