import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// Several workers: the TAP is opened multi-queue with one queue per worker, the kernel
    /// spreads flows over the queues and the SO_REUSEPORT sockets, and every flow arrives
    /// whole and in order whichever worker carries it.
    @Suite struct LiveWorkerTests {
        @Test(arguments: [LiveTunnel.vxlan, .gre])
        func flowsSpreadOverWorkersAndArriveIntact(_ tunnel: LiveTunnel) throws {
            let live = try LiveLab(tag: "mq\(tunnel == .vxlan ? "vx" : "gr")")
            defer { live.teardown() }
            try live.build()
            for i in 0..<2 { try live.startFerry(on: i, tunnel: tunnel.arguments, extra: ["--workers", "2"]) }
            let (a, b) = (live.container(0), live.container(1))

            // The TAP has a queue per worker.
            for h in live.hosts {
                let details = try live.exec(h.namespace, ["ip", "-d", "link", "show", "ferry0"]).stdout
                #expect(details.contains("multi_queue") && details.contains("numqueues 2"),
                        "\(tunnel): ferry0 on \(h.namespace) is not a 2-queue TAP: \(details)")
            }
            let ping = try live.ping(from: a.namespace, to: b.address, count: 3)
            try #require(ping.allReceived, "\(tunnel): \(ping)")

            // One flow after another (a port each), until both workers of each host have carried
            // some: the kernel hashes flows, so which worker gets a flow is not known ahead.
            // Every flow must arrive intact, whichever worker it landed on.
            var flows = 0
            func spread(_ s: CtlStats, _ key: KeyPath<CtlStats.Worker, UInt64>) -> Bool {
                s.workers.count == 2 && s.workers.allSatisfy { $0[keyPath: key] > 0 }
            }
            while flows < 16 {
                let t = try live.transfer(bytes: 2 * Live.mebibyte, from: a.namespace, to: b.namespace, address: b.address,
                                          port: 5100 + flows, timeout: 60)
                flows += 1
                #expect(t.receivedBytes == t.bytes && t.receivedSHA256 == t.sentSHA256, "\(tunnel) flow \(flows): \(t)")
                let s0 = try live.stats(0), s1 = try live.stats(1)
                // GRE arrives on one raw socket (each raw socket gets every packet), so only the
                // sending side spreads; VXLAN spreads both ways.
                if spread(s0, \.tapRxFrames) && (tunnel == .gre || spread(s1, \.receivedPackets)) { break }
            }
            let s0 = try live.stats(0), s1 = try live.stats(1)
            print("[live mq \(tunnel)] \(flows) flows; h0 workers tap rx \(s0.workers.map(\.tapRxFrames)); "
                  + "h1 workers received \(s1.workers.map(\.receivedPackets))")
            #expect(spread(s0, \.tapRxFrames), "\(tunnel): h0's TAP queues: \(s0.workers) after \(flows) flows")
            #expect(spread(s0, \.sentPackets), "\(tunnel): h0's senders: \(s0.workers)")
            if tunnel == .vxlan {
                #expect(spread(s1, \.receivedPackets), "\(tunnel): h1's receivers: \(s1.workers)")
            } else {
                #expect(s1.workers[1].receivedPackets == 0, "\(tunnel): a second raw GRE receiver would see duplicates: \(s1.workers)")
            }
            // The per-worker figures add up to the totals.
            for s in [s0, s1] {
                #expect(s.workers.reduce(0) { $0 + $1.tapRxFrames } == (try s.counter("tap_rx_frames")))
                #expect(s.workers.reduce(0) { $0 + $1.receivedPackets } == (try s.counter("received_packets")))
            }
            #expect(s0.drops(except: ["oversize_frame"]).isEmpty && s1.drops(except: ["oversize_frame"]).isEmpty,
                    "\(tunnel): drops: \(s0) / \(s1)")
            for (i, status) in live.stopFerries() {
                #expect(status == 0, "\(tunnel): ferry on h\(i) exited \(status):\n\(live.logTail(i))")
            }
        }

        /// A one-way flow stays on its worker for its whole life. (Left to itself, the kernel
        /// keeps a flow on the queue that last wrote its replies, and moves it to a queue chosen
        /// by hash 3 s after the last one, which for any one flow is another queue half the
        /// time: iperf3's UDP test gets one reply at the start, then streams. Four flows make
        /// that a 15-in-16 chance of being caught.)
        @Test func aOneWayFlowStaysOnOneWorker() throws {
            let live = try LiveLab(tag: "mqpin")
            defer { live.teardown() }
            try live.build()
            for i in 0..<2 { try live.startFerry(on: i, tunnel: LiveTunnel.vxlan.arguments, extra: ["--workers", "2"]) }
            let (a, b) = (live.container(0), live.container(1))
            try #require(try live.ping(from: a.namespace, to: b.address, count: 2).allReceived)
            for flow in 0..<4 {
                let server = try live.lab.spawn(b.namespace, ["iperf3", "-s", "-1"],
                                                log: (live.logs as NSString).appendingPathComponent("iperf3-\(flow).log"))
                defer { if server.isRunning { server.terminate() } }
                _ = Lab.waitUntil(timeout: 10, interval: 0.05) {
                    (try? live.exec(b.namespace, ["ss", "-ltn", "sport = :5201"]).stdout.contains("5201")) ?? false
                }
                let before = try live.stats(0).workers.map(\.tapRxFrames)
                let run = try live.exec(a.namespace, ["iperf3", "-c", b.address, "-u", "-b", "10M", "-l", "200", "-t", "4",
                                                      "--cport", String(41000 + flow)], timeout: 30)
                try #require(run.status == 0, "iperf3: \(run.stdout)\(run.stderr)")
                _ = Lab.waitUntil(timeout: 10, interval: 0.05) { !server.isRunning }
                let after = try live.stats(0).workers.map(\.tapRxFrames)
                let moved = zip(after, before).map { $0 - $1 }
                print("[live mq pin] flow \(flow): frames per worker \(moved)")
                // 25,000 datagrams; iperf3's own TCP control connection adds a few dozen frames.
                #expect(moved.max()! > 20_000, "flow \(flow) did not cross: \(moved)")
                #expect(moved.min()! < 200, "flow \(flow) was split between workers: \(moved)")
            }
        }

        /// One worker: a plain single-queue TAP, as before multi-queue.
        @Test func oneWorkerIsSingleQueue() throws {
            let live = try LiveLab(tag: "mq1")
            defer { live.teardown() }
            try live.build()
            for i in 0..<2 { try live.startFerry(on: i, tunnel: LiveTunnel.vxlan.arguments, extra: ["--workers", "1"]) }
            let details = try live.exec(live.host(0).namespace, ["ip", "-d", "link", "show", "ferry0"]).stdout
            #expect(!details.contains("multi_queue"), "ferry0 is multi-queue with one worker: \(details)")
            let ping = try live.ping(from: live.container(0).namespace, to: live.container(1).address, count: 3)
            #expect(ping.allReceived, "\(ping)")
            #expect(try live.stats(0).workers.count == 1)
        }
    }
}
