import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// TCP over IPv6 with hop-by-hop and destination options on every packet (RFC 3542 sticky
    /// options), between containers on two hosts, with TSO on: the sender's TAP hands Ferry
    /// super-frames whose extension headers lie between IPv6 and TCP. They used to be dropped
    /// whole (`bad_super_frame`) and the connection stalled; now each is cut with the headers
    /// copied into every segment, and the transfer completes intact.
    @Suite struct LiveExtensionHeaderTests {
        /// As `Live.senderScript`, with the options set before connecting.
        static let senderScript = """
            import socket, sys
            host, port, path, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
            conn = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            # Hop-by-hop options (8 bytes: a PadN) and destination options (16 bytes: an
            # experimental option, RFC 4727 type 0x1E, skipped by a receiver that does not know
            # it, then a PadN). Linux refuses more than 7 bytes of padding in a row.
            conn.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
            conn.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS,
                            bytes([0, 1, 0x1E, 6, 0x46, 0x65, 0x72, 0x72, 0x79, 0x21, 1, 4, 0, 0, 0, 0]))
            conn.settimeout(limit)
            conn.connect((host, port))
            sent = 0
            with open(path, "rb") as f:
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    conn.sendall(chunk)
                    sent += len(chunk)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass
            conn.close()
            print("sent", sent, flush=True)
            """

        @Test func tcpWithExtensionHeadersCrossesAsSuperFrames() throws {
            let live = try LiveLab(tag: "exthdr")
            defer { live.teardown() }
            try live.build()
            let tunnel = ["--encap", "vxlan", "--vni", "42"]
            for i in 0..<2 { try live.startFerry(on: i, tunnel: tunnel) }
            let (a, b) = (live.container(0), live.container(1))
            let (a6, b6) = ("fd00:17::2", "fd00:17::3")
            for (ns, address) in [(a.namespace, a6), (b.namespace, b6)] {
                try live.exec(ns, ["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"])
                try live.ip(ns, "-6", "addr", "add", address + "/64", "dev", "eth0", "nodad")
            }
            let warm = try live.ping(from: a.namespace, to: b6, count: 3, ipv6: true)
            try #require(warm.allReceived, "IPv6 pings fail: \(warm)\n\(live.logTail(0))")

            let bytes = 16 * Live.mebibyte, port = 5301
            let source = live.file("send-ext.bin"), sink = live.file("received-ext.bin")
            try live.writeRandomFile(source, bytes: bytes)
            let receiverLog = live.file("receiver-ext.log")
            let server = try live.lab.spawn(b.namespace, [live.python, "-c", Live.receiverScript, b6, String(port), sink, "120"],
                                            log: receiverLog)
            defer { if server.isRunning { server.terminate() } }
            func receiverOutput() -> String { (try? String(contentsOfFile: receiverLog, encoding: .utf8)) ?? "" }
            try #require(Lab.waitUntil(timeout: 15, interval: 0.05) { receiverOutput().contains("listening") || !server.isRunning }
                         && server.isRunning, "the receiver did not listen: \(receiverOutput())")
            let before = try live.stats(0), before1 = try live.stats(1)
            let started = Date()
            let client = try live.lab.attempt(a.namespace, [live.python, "-c", Self.senderScript, b6, String(port), source, "120"],
                                              timeout: 130)
            let finished = Lab.waitUntil(timeout: 15, interval: 0.05) { !server.isRunning }
            let seconds = Date().timeIntervalSince(started)
            #expect(client.status == 0 && finished, "sender: \(client.stdout)\(client.stderr); receiver: \(receiverOutput())")
            #expect(receiverOutput().contains("received \(bytes) "), "\(receiverOutput())")
            #expect(try live.sha256(sink) == live.sha256(source), "the bytes arrived intact")

            let s0 = try live.stats(0), s1 = try live.stats(1)
            #expect(try s0.counter("tap_super_frames") > before.counter("tap_super_frames"), "no super-frames from h0's TAP: \(s0)")
            #expect(try s0.drop("bad_super_frame") == 0 && s0.drop("bad_super_frame_extension_headers") == 0, "h0: \(s0)")
            #expect(s0.drops(except: ["oversize_frame"]).isEmpty && s1.drops(except: ["oversize_frame"]).isEmpty, "\(s0)\n\(s1)")
            // The receiving Ferry joins no segment with extension headers (it would join the
            // same flow's segments without them): each went to its TAP as it came.
            #expect(try s1.counter("coalesced_segments") == before1.counter("coalesced_segments"), "h1: \(s1)")
            print("[live extension headers] 16 MiB over IPv6 with hop-by-hop + destination options in "
                  + "\(String(format: "%.2f", seconds)) s; h0 super-frames \(try s0.counter("tap_super_frames") - before.counter("tap_super_frames")), "
                  + "segments \(try s0.counter("tap_super_frame_segments") - before.counter("tap_super_frame_segments"))")
        }
    }
}
