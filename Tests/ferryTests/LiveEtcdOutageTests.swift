import FerryLab
import FerryTestSupport
import Foundation
import Testing

/// etcd away for 30 s under running hosts (the issue's outage): transfers between containers
/// that run across it complete with their SHA-256, the hosts say etcd is away (`ctl members`,
/// /metrics) and forward all the same, and a host started during the outage waits and joins once
/// etcd is back.
///
/// A top-level suite of its own, not one of `LiveLabTests`: it mostly waits, with two transfers
/// paced at about 1 MiB/s, so it runs beside the labs one at a time there instead of adding its
/// 50 s to them. Its namespaces, sockets and etcd are its own (the lab's prefix).
@Suite(.serialized, .ownThreads, .enabled(if: Live.isRoot, "builds network namespaces, TAP devices and an etcd: needs root"))
struct LiveEtcdOutageTests {
    static let outage = 30.0

    @Test func etcdAwayThirtySecondsLosesNoTransferAndAHostStartedMeanwhileJoins() throws {
        let e = try EtcdLive(tag: "etcdout", hosts: 3, withBridges: true)
        defer { e.teardown() }
        try e.build()
        try e.initNetwork(["--encap", "vxlan", "--vni", "45"])
        let live = e.live
        let addresses = Dictionary(uniqueKeysWithValues: live.hosts.map { ($0.index, live.container($0.index).address) })
        try e.start(0, extra: ["--metrics", "127.0.0.1:9108"])
        try e.start(1)
        #expect(e.pingAllPairs([0, 1], addresses: addresses, timeout: 15) != nil, "the first two hosts' containers ping")
        #expect(try e.metric(0, "ferry_etcd_reachable") == 1)
        #expect(try e.metric(0, "ferry_membership_hosts") == 2)

        // One transfer each way, paced to run from before the outage to after it.
        let transfers = try [PacedTransfer(live, from: 0, to: 1, port: 5301, seconds: Self.outage + 10),
                             PacedTransfer(live, from: 1, to: 0, port: 5302, seconds: Self.outage + 10)]
        Thread.sleep(forTimeInterval: 2)

        e.etcd.stop(0)
        let stopped = Date()
        let receivedAtStop = transfers.map(\.receivedBytes)
        let away = e.waitForMembers(0, timeout: 15) { !$0.reachable }
        #expect(away != nil, "ctl members says etcd is unreachable")
        let page = try e.metricsPage(0)
        #expect(page.contains("\nferry_etcd_reachable 0"), "/metrics says etcd is unreachable")
        let lint = try promtool(page)
        #expect(lint.status == 0, "promtool check metrics during the outage: \(lint.output)")

        // A third host starts while etcd is away: it waits (saying so), with no TAP yet.
        Thread.sleep(forTimeInterval: max(0, 5 - Date().timeIntervalSince(stopped)))
        let third = try e.start(2, waitUntilReady: false)
        let waits = Lab.waitUntil(timeout: 15) { live.logTail(2).contains("etcd is unreachable") }
        #expect(waits && third.isRunning, "the third host waits for etcd, saying so:\n\(live.logTail(2))")

        Thread.sleep(forTimeInterval: max(0, Self.outage - Date().timeIntervalSince(stopped)))
        let receivedAtReturn = transfers.map(\.receivedBytes)
        try e.etcd.restart(0)
        let back = Date()
        let outage = back.timeIntervalSince(stopped)
        for (i, t) in transfers.enumerated() {
            // At about 1 MiB/s: well over 10 MiB in the 30 s, had forwarding gone on.
            #expect(receivedAtReturn[i] - receivedAtStop[i] > 10 * Live.mebibyte,
                    "transfer \(t.port) went on through the outage: \(receivedAtStop[i]) then \(receivedAtReturn[i]) bytes")
        }

        // The third host joins: a peer of both others, and its container pings theirs.
        let joined = Lab.waitUntil(timeout: 30, interval: 0.1) {
            [0, 1].allSatisfy { (try? e.members($0))?.peers.contains(live.host(2).underlay) == true }
        }
        let joinSeconds = Date().timeIntervalSince(back)
        #expect(joined, "the host started during the outage joined once etcd was back\n\(live.logTail(2))")
        let all = e.pingAllPairs([0, 1, 2], addresses: addresses, timeout: 20)
        #expect(all != nil, "every container pings every other after the outage")
        let m0 = e.waitForMembers(0, timeout: 10) { $0.reachable && $0.hosts.count == 3 && $0.outages >= 1 }
        #expect(m0 != nil, "host 0 sees etcd again, three hosts, the outage counted: \(String(describing: try? e.members(0)))")
        #expect(try e.metric(0, "ferry_etcd_reachable") == 1)
        #expect(try e.metric(0, "ferry_membership_hosts") == 3)
        #expect((try e.metric(0, "ferry_etcd_outages_total") ?? 0) >= 1)

        for t in transfers {
            let result = try t.finish(timeout: 60)
            #expect(result.receivedBytes == result.bytes && result.sentSHA256 == result.receivedSHA256,
                    "transfer \(t.port) across the outage: \(result)")
        }
        print("[live etcd outage] etcd away \(String(format: "%.1f", outage)) s; transfers each way "
              + "\(transfers.map { "\($0.bytes / Live.mebibyte) MiB" }.joined(separator: ", ")) complete with their SHA-256; "
              + "the host started during the outage a peer of both others \(String(format: "%.1f", joinSeconds)) s after etcd returned")
        #expect(third.isRunning)
    }
}

/// A TCP transfer between two hosts' containers, paced at about 1 MiB/s so that it lasts
/// `seconds`, running in the background until `finish`.
final class PacedTransfer {
    let live: LiveLab
    let port: Int
    let bytes: Int
    let source: String
    let sink: String
    let receiver: Process
    let sender: Process
    let sentSHA: String

    static let rate = Live.mebibyte

    /// Sends `bytes` (at `rate` a second, in 64 KiB chunks), then waits for the receiver to close.
    static let senderScript = """
        import socket, sys, time
        host, port, path, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
        conn = socket.create_connection((host, port), timeout=120)
        start, sent = time.monotonic(), 0
        with open(path, "rb") as f:
            while True:
                chunk = f.read(65536)
                if not chunk:
                    break
                conn.sendall(chunk)
                sent += len(chunk)
                ahead = start + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass
        conn.close()
        print("sent", sent, flush=True)
        """

    init(_ live: LiveLab, from a: Int, to b: Int, port: Int, seconds: Double) throws {
        self.live = live
        self.port = port
        bytes = Int(seconds) * Self.rate
        source = live.file("paced-\(port).bin")
        sink = live.file("paced-received-\(port).bin")
        try live.writeRandomFile(source, bytes: bytes)
        sentSHA = try live.sha256(source)
        let address = live.container(b).address
        receiver = try live.startReceiver(in: live.container(b).namespace, address: address, port: port, sink: sink, timeout: 120,
                                          log: "paced-receiver-\(port).log")
        sender = try live.spawn(live.container(a).namespace,
                                [live.python, "-c", Self.senderScript, address, String(port), source, String(Self.rate)],
                                log: "paced-sender-\(port).log")
    }

    /// What the receiver has written so far.
    var receivedBytes: Int {
        ((try? FileManager.default.attributesOfItem(atPath: sink)[.size]) as? NSNumber)?.intValue ?? 0
    }

    /// Waits for both ends, then compares what was sent with what was received.
    func finish(timeout: Double) throws -> TransferResult {
        let ended = Lab.waitUntil(timeout: timeout) { !sender.isRunning && !receiver.isRunning }
        defer {
            for p in [sender, receiver] where p.isRunning { p.terminate() }
            try? FileManager.default.removeItem(atPath: source)
            try? FileManager.default.removeItem(atPath: sink)
        }
        guard ended, sender.terminationStatus == 0 else {
            let log = (try? String(contentsOfFile: live.file("paced-sender-\(port).log"), encoding: .utf8)) ?? ""
            throw UnexpectedOutput("the paced transfer on port \(port) did not end well: \(log)")
        }
        return TransferResult(bytes: bytes, receivedBytes: receivedBytes, sentSHA256: sentSHA, receivedSHA256: try live.sha256(sink),
                              seconds: 0)
    }
}
