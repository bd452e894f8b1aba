import FerryLab
import FerryWire
import Foundation
import Testing

extension LiveLabTests {
    /// `ferry run --metrics` scraped by a real Prometheus server (Debian's, started by hand in
    /// a host's namespace, scraping Ferry on that namespace's loopback every second).
    @Suite struct LiveMetricsTests {
        static let metricsPort = 9108
        static let prometheusPort = 9090
        static let scrapeInterval = 1.0

        /// An HTTP request from inside a namespace: prints the status on the first line, then the body.
        static let httpScript = """
            import sys, urllib.request, urllib.error
            method, url = sys.argv[1], sys.argv[2]
            data = b"x" if method in ("POST", "PUT") else None
            req = urllib.request.Request(url, method=method, data=data)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    status, body = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, body = e.code, e.read()
            sys.stdout.write(str(status) + "\\n")
            sys.stdout.flush()
            sys.stdout.buffer.write(body)
            """

        struct Reading {
            var started: Double
            var ended: Double
            var value: UInt64
        }

        struct Sample {
            var time: Double
            var value: Double
        }

        /// h1's Ferry scraped while a ping crosses the tunnel: every sample of
        /// `ferry_tap_rx_frames_total` that Prometheus stored lies between the `ctl stats`
        /// readings taken just before its scrape and one scrape timeout after it; drops caused
        /// on purpose show under their reason and direction; the batch histogram's egress sum is
        /// the frames read from the TAP; 404 and 405 for what is not served; a client that
        /// connects and says nothing stops no scrape.
        @Test func prometheusScrapesWhatCtlStatsShows() throws {
            guard let prometheus = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].first(where: FileManager.default.isExecutableFile)
            else {
                Issue.record("prometheus is missing: install Debian's prometheus package (tools/setup does)")
                return
            }
            let live = try LiveLab(tag: "metrics", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let tunnel = ["--encap", "vxlan", "--vni", "42"]
            try live.startFerry(on: 0, peers: [1], tunnel: tunnel)
            try live.startFerry(on: 1, peers: [0], tunnel: tunnel, extra: ["--metrics", "127.0.0.1:\(Self.metricsPort)"])
            let ns = live.host(1).namespace
            let http = live.file("metrics-get.py")
            try Self.httpScript.write(toFile: http, atomically: true, encoding: .utf8)
            func get(_ url: String, method: String = "GET") throws -> (status: Int, body: String) {
                let o = try live.attempt(ns, [live.python, http, method, url], timeout: 20)
                let lines = o.stdout.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
                guard let status = lines.first.flatMap({ Int($0) }) else { return (-1, "no answer: \(o.stdout)\(o.stderr)") }
                return (status, lines.count > 1 ? String(lines[1]) : "")
            }
            let metricsURL = "http://127.0.0.1:\(Self.metricsPort)/metrics"

            // What is served and what is not.
            let page = try get(metricsURL)
            try #require(page.status == 200, "\(page)")
            let lint = try promtool(page.body)
            #expect(lint.status == 0, "promtool check metrics on the live exposition: \(lint.output)")
            #expect(try get(metricsURL, method: "POST").status == 405)
            #expect(try get("http://127.0.0.1:\(Self.metricsPort)/").status == 404)
            #expect(try get("http://127.0.0.1:\(Self.metricsPort)/nope").status == 404)

            // Prometheus, on h1's loopback, its data in the lab's directory.
            let config = live.file("prometheus.yml")
            try """
                global:
                  scrape_interval: \(Int(Self.scrapeInterval))s
                  scrape_timeout: \(Int(Self.scrapeInterval))s
                scrape_configs:
                  - job_name: ferry
                    static_configs:
                      - targets: ["127.0.0.1:\(Self.metricsPort)"]
                """.write(toFile: config, atomically: true, encoding: .utf8)
            let server = try live.spawn(ns, [prometheus, "--config.file=\(config)", "--storage.tsdb.path=\(live.file("prometheus-data"))",
                                             "--web.listen-address=127.0.0.1:\(Self.prometheusPort)", "--log.level=warn"],
                                        log: "prometheus.log")
            defer {
                server.terminate()
                if !Lab.waitUntil(timeout: 10, { !server.isRunning }) { kill(server.processIdentifier, SIGKILL) }
                server.waitUntilExit()
            }
            let api = "http://127.0.0.1:\(Self.prometheusPort)/api/v1/query?query="
            func query(_ promql: String) throws -> [[String: Any]] {
                let encoded = promql.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? promql
                let r = try get(api + encoded)
                guard r.status == 200, let json = try JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any],
                      let data = json["data"] as? [String: Any], let result = data["result"] as? [[String: Any]] else {
                    throw Failure("query \(promql): \(r.status) \(r.body.prefix(500))")
                }
                return result
            }
            /// The one instant value of `promql`, if any.
            func value(_ promql: String) -> Sample? {
                guard let result = try? query(promql), result.count == 1, let v = result[0]["value"] as? [Any],
                      let t = v.first as? Double, let text = v.last as? String, let x = Double(text) else { return nil }
                return Sample(time: t, value: x)
            }
            let up = Lab.waitUntil(timeout: 60, interval: 0.5) { value(#"up{job="ferry"}"#)?.value == 1 }
            try #require(up, "Prometheus never scraped Ferry: \(((try? String(contentsOfFile: live.file("prometheus.log"), encoding: .utf8)) ?? "").suffix(2000))")

            // Traffic, and ctl stats read over and over while Prometheus scrapes.
            let ping = try live.spawn(live.container(0).namespace,
                                      ["ping", "-n", "-c", "120", "-i", "0.05", "-W", "2", live.container(1).address], log: "ping.log")
            var readings: [Reading] = []
            let begin = Date()
            while Date().timeIntervalSince(begin) < 8 {
                let started = Date().timeIntervalSince1970
                let s = try live.stats(1)
                readings.append(Reading(started: started, ended: Date().timeIntervalSince1970, value: try s.counter("tap_rx_frames")))
                usleep(50_000)
            }
            _ = Lab.waitUntil(timeout: 20) { !ping.isRunning }
            usleep(UInt32(2 * Self.scrapeInterval * 1e6))
            let window = Int(Date().timeIntervalSince(begin)) + 10
            let stored = try query("ferry_tap_rx_frames_total[\(window)s]")
            let samples = (stored.first?["values"] as? [[Any]] ?? []).compactMap { pair -> Sample? in
                guard let t = pair.first as? Double, let text = pair.last as? String, let v = Double(text) else { return nil }
                return Sample(time: t, value: v)
            }
            var checked = 0, moving = 0
            var brackets: [String] = []
            for sample in samples {
                // The scrape starts at its timestamp and reads the counters within its timeout.
                guard let before = readings.last(where: { $0.ended <= sample.time }),
                      let after = readings.first(where: { $0.started >= sample.time + Self.scrapeInterval }) else { continue }
                checked += 1
                if after.value > before.value { moving += 1 }
                brackets.append("\(before.value)<=\(Int(sample.value))<=\(after.value)")
                #expect(Double(before.value) <= sample.value && sample.value <= Double(after.value),
                        "sample \(sample.value) at \(sample.time): ctl read \(before.value) before it, \(after.value) after")
            }
            print("[live metrics] \(samples.count) samples of ferry_tap_rx_frames_total, \(checked) between ctl readings "
                  + "(\(moving) while it moved), \(readings.count) ctl readings, last \(readings.last?.value ?? 0); ctl<=scraped<=ctl: "
                  + brackets.joined(separator: " "))
            #expect(checked >= 4, "too few scrapes between ctl readings: \(samples.count) samples, \(readings.count) readings")
            #expect(moving >= 2, "the counter did not move between readings around a scrape: was there traffic?")

            // Drops caused on purpose: VXLAN packets of another VNI from h0 reach h1's Ferry.
            let wrongVNI = 6
            try PacketSender(live: live).send(from: live.host(0).namespace, [
                .udp(destination: live.host(1).underlay, port: 4789, sourcePort: 45009,
                     payload: HandMadePacket.vxlan(vni: 7, inner: HandMadePacket.markedFrame(9)), count: wrongVNI),
            ], name: "wrong-vni")
            _ = try live.waitForStats(1) { try $0.drop("unexpected_vni") >= UInt64(wrongVNI) }
            let dropSeries = #"ferry_drops_total{reason="unexpected_vni",direction="ingress"}"#
            let dropped = Lab.waitUntil(timeout: 10, interval: 0.5) { value(dropSeries)?.value == Double(wrongVNI) }
            #expect(dropped, "\(dropSeries) is \(String(describing: value(dropSeries))), ctl stats counted \(wrongVNI)")
            #expect(value(#"ferry_drops_total{reason="unexpected_vni",direction="egress"}"#)?.value == 0)

            // The histogram: the egress batches held every frame read from the TAP (one scrape).
            let quiet = Lab.waitUntil(timeout: 10, interval: 0.5) {
                value(#"sum(ferry_batch_size_frames_sum{direction="egress"}) - sum(ferry_tap_rx_frames_total)"#)?.value == 0
            }
            #expect(quiet, "egress batch frames and tap_rx_frames differ")
            #expect((value(#"sum(ferry_batch_size_frames_count{direction="egress"})"#)?.value ?? 0) > 0)
            let peer = live.host(0).underlay
            #expect((value("ferry_peer_rx_packets_total{peer=\"\(peer)\"}")?.value ?? 0) > 0, "no per-peer series for \(peer)")
            #expect(value(#"ferry_peers{state="configured"}"#)?.value == 1)

            let end = try get(metricsURL)
            let shown = ["ferry_tap_rx_frames_total ", "ferry_sent_bytes_total ", "ferry_drops_total{direction=\"ingress\",reason=\"unexpected_vni\"}",
                         "ferry_peer_rx_packets_total", "ferry_worker_sent_packets_total", "ferry_peers{state=\"configured\"}",
                         "ferry_fdb_entries ", "ferry_batch_size_frames_bucket{direction=\"egress\",worker=\"0\",le=\"4\"}"]
            print("[live metrics] " + end.body.split(separator: "\n").filter { line in shown.contains { line.hasPrefix($0) } }
                .joined(separator: " | "))

            // A client that connects and sends nothing: the next scrapes happen all the same.
            let silent = try live.spawn(ns, [live.python, "-c",
                                             "import socket,time; s=socket.create_connection(('127.0.0.1',\(Self.metricsPort))); time.sleep(30)"],
                                        log: "silent.log")
            defer { silent.terminate() }
            usleep(200_000)
            let last = value(#"timestamp(up{job="ferry"})"#)?.value ?? 0
            let scraped = Lab.waitUntil(timeout: 10, interval: 0.25) {
                guard let t = value(#"timestamp(up{job="ferry"})"#)?.value, t >= last + 2 * Self.scrapeInterval else { return false }
                return value(#"up{job="ferry"}"#)?.value == 1
            }
            #expect(scraped, "no successful scrape while a client held a silent connection")
            #expect(silent.isRunning, "the silent client ended early: the check proved nothing")
        }
    }
}

private struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// `promtool check metrics` over `text`: its exit status and what it printed.
func promtool(_ text: String) throws -> (status: Int32, output: String) {
    let scratch = NSTemporaryDirectory() + "ferry-metrics-\(UUID().uuidString).txt"
    try text.write(toFile: scratch, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(atPath: scratch) }
    let o = try Lab.capture(["sh", "-c", "promtool check metrics < \"$0\"", scratch], timeout: 30)
    return (o.status, o.stdout + o.stderr)
}
