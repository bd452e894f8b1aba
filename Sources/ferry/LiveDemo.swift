import ArgumentParser
import FerryEngine
import FerryLab
import FerryWire
import Foundation

/// `ferry demo`: two hosts, Ferry between them, a ping and a transfer, the counters.
struct LiveDemo {
    var encap: TunnelKind
    var ipv6Underlay: Bool
    var seconds: Int
    var keep: String?

    func run() throws {
        guard geteuid() == 0 else {
            throw ToolError("the live demo builds network namespaces and needs root (sudo); `ferry demo --offline` needs no privileges")
        }
        for tool in ["ip", "ping", "iperf3"] where (try? Lab.capture(["which", tool]))?.status != 0 {
            throw ToolError("the live demo needs \(tool); install it with tools/setup (iproute2, iputils-ping, iperf3)")
        }
        let lab = Lab(prefix: "ferrydemo", hosts: 2, ipv6Underlay: ipv6Underlay)
        let logs = keep ?? (NSTemporaryDirectory() + "ferry-demo-\(getpid())")
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)

        let sources = tearDownOnInterrupt { lab.teardown() }
        defer {
            lab.teardown()
            sources.forEach { $0.cancel() }
            if keep == nil { try? FileManager.default.removeItem(atPath: logs) }
        }

        let tunnel = encap == .vxlan ? ["--encap", "vxlan", "--vni", "42"] : ["--encap", "gre", "--key", "42"]
        print("building the lab: 2 hosts on a veth underlay (\(ipv6Underlay ? "fd00:99::/64" : "10.99.0.0/24")), "
              + "containers 10.17.0.2 and 10.18.0.2 behind bridge0 on each")
        try lab.build()
        let binary = Lab.currentExecutable
        var ferries: [Process] = []
        for host in lab.hosts {
            ferries.append(try lab.startFerry(binary: binary, on: host, tunnel: tunnel, log: "\(logs)/ferry-h\(host.index).log"))
        }
        print("ferry \(tunnel.joined(separator: " ")) running on \(lab.hosts.map(\.underlay).joined(separator: " and "))\n")

        let a = lab.hosts[0].containers[0], b = lab.hosts[1].containers[0]
        let ping = try lab.attempt(a.namespace, ["ping", "-c", "5", "-i", "0.2", "-W", "2", b.address], timeout: 20)
        let pingSummary = ping.stdout.split(separator: "\n").filter { $0.contains("packets transmitted") || $0.contains("rtt") }
        print("ping \(a.address) -> \(b.address):")
        pingSummary.forEach { print("  \($0)") }
        guard ping.status == 0 else {
            throw ToolError("the containers cannot reach each other through Ferry; logs in \(logs) (run with --keep DIR to keep them)")
        }

        let server = try lab.spawn(b.namespace, ["iperf3", "-s", "-1"], log: "\(logs)/iperf3-server.log")
        _ = Lab.waitUntil(timeout: 5) { (try? lab.attempt(b.namespace, ["ss", "-ltn", "sport = :5201"]))?.stdout.contains("5201") ?? false }
        let client = try lab.attempt(a.namespace, ["iperf3", "-c", b.address, "-t", "\(seconds)", "-J"], timeout: Double(seconds) + 20)
        server.waitUntilExit()
        let rate = Self.iperfRate(client.stdout)
        print("\niperf3 TCP \(a.address) -> \(b.address), \(seconds) s: "
              + (rate.map { String(format: "%.2f Gbit/s (%d retransmits)", $0.bitsPerSecond / 1e9, $0.retransmits) } ?? "failed: \(client.stderr)"))

        let stats = try lab.attempt(lab.hosts[0].namespace, [binary, "ctl", "--control", lab.controlPath(0), "stats"])
        print("\nferry ctl stats on host \(lab.hosts[0].underlay):\n")
        print(stats.stdout)
        for f in ferries { Lab.stop(f) }
        if rate == nil { throw ExitCode(1) }
        print("demo complete; the lab is torn down" + (keep.map { ", logs kept in \($0)" } ?? ""))
    }

    static func iperfRate(_ json: String) -> (bitsPerSecond: Double, retransmits: Int)? {
        guard let data = json.data(using: .utf8),
              let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let end = root["end"] as? [String: Any],
              let sent = end["sum_sent"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
              let bps = received["bits_per_second"] as? Double
        else { return nil }
        return (bps, sent["retransmits"] as? Int ?? 0)
    }
}

/// Ctrl-C or SIGTERM runs `teardown` (the demo's lab) and exits 130; cancel the sources returned
/// once the demo has torn down itself.
func tearDownOnInterrupt(_ teardown: @escaping @Sendable () -> Void) -> [any DispatchSourceSignal] {
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    return [SIGINT, SIGTERM].map { sig in
        let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        s.setEventHandler {
            print("\ninterrupted: tearing the lab down")
            teardown()
            exit(130)
        }
        s.resume()
        return s
    }
}
