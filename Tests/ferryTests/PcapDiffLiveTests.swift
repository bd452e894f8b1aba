import FerryLab
import FerryTestSupport
import Foundation
import Testing

/// `ferry pcap diff` on real captures: the two sides of the kernel's own vxlan device (iproute2's
/// defaults: port 8472), tcpdump on host A's underlay (VXLAN) and on host B's vxlan device (the
/// inner frames), while pings and a short TCP transfer cross. Nothing is lost, altered or
/// duplicated, and every frame of B is one of A's.
@Suite(.serialized, .ownThreads, .enabled(if: Live.isRoot, "needs root for network namespaces"))
struct PcapDiffLiveTests {
    /// Starts tcpdump in `ns` on `device` into `path` and waits until it listens.
    func startTcpdump(_ ns: String, _ device: String, _ path: String, filter: [String]) throws -> Process {
        let log = path + ".log"
        let tcpdump = Process()
        tcpdump.executableURL = URL(fileURLWithPath: try Tools.system("ip"))
        tcpdump.arguments = ["netns", "exec", ns, "tcpdump", "-i", device, "-n", "-U", "--immediate-mode", "-B", "16384", "-Z", "root", "-w", path]
            + filter
        guard FileManager.default.createFile(atPath: log, contents: nil) else { throw CocoaError(.fileWriteUnknown) }
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        tcpdump.standardInput = FileHandle.nullDevice
        tcpdump.standardOutput = logHandle
        tcpdump.standardError = logHandle
        try tcpdump.run()
        try? logHandle.close()
        let listening = Lab.waitUntil(timeout: 10) {
            !tcpdump.isRunning || ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("listening on")
        }
        if !(listening && tcpdump.isRunning) {
            Lab.stop(tcpdump, timeout: 5)
            Issue.record("tcpdump did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            throw CocoaError(.fileWriteUnknown)
        }
        return tcpdump
    }

    @Test func bothSidesOfAKernelTunnelMatch() throws {
        try withScratch { s in
            let prefix = "ferrydiff"
            Lab.removeLeftovers(prefix: prefix)
            defer { Lab.removeLeftovers(prefix: prefix) }
            let a = prefix + "-a", b = prefix + "-b"
            func ip(_ ns: String, _ args: String...) throws { _ = try Lab.capture(["ip", "-n", ns] + args) }
            _ = try Lab.capture(["ip", "netns", "add", a])
            _ = try Lab.capture(["ip", "netns", "add", b])
            _ = try Lab.capture(["ip", "link", "add", "u0", "netns", a, "type", "veth", "peer", "name", "u0", "netns", b])
            for (ns, me, other, inner) in [(a, "10.79.0.1", "10.79.0.2", "10.80.0.1"), (b, "10.79.0.2", "10.79.0.1", "10.80.0.2")] {
                // No IPv6 chatter (router solicitations, MLD) to straddle a capture's start or end.
                _ = try Lab.capture(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
                _ = try Lab.capture(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
                try ip(ns, "addr", "add", "\(me)/24", "dev", "u0")
                try ip(ns, "link", "set", "u0", "up")
                try ip(ns, "link", "set", "lo", "up")
                _ = try Lab.capture(["ip", "-n", ns, "link", "add", "vx0", "type", "vxlan", "id", "42", "remote", other,
                                     "local", me, "dev", "u0"])
                try ip(ns, "addr", "add", "\(inner)/24", "dev", "vx0")
                try ip(ns, "link", "set", "vx0", "up")
            }
            let outer = s.file("a-underlay.pcap"), inner = s.file("b-vx0.pcap")
            let dumpA = try startTcpdump(a, "u0", outer, filter: ["udp"])
            defer { Lab.stop(dumpA, timeout: 5) }
            let dumpB = try startTcpdump(b, "vx0", inner, filter: [])
            defer { Lab.stop(dumpB, timeout: 5) }

            let ping = try Lab.capture(["ip", "netns", "exec", a, "ping", "-c", "5", "-i", "0.1", "-W", "2", "10.80.0.2"])
            #expect(ping.status == 0, "the kernel's own tunnel does not carry a ping: \(ping)")
            // A short TCP transfer, A to B (a bounded count of bytes), paced so that tcpdump on a
            // busy machine keeps up (a capture that drops frames makes a diff that says so).
            let server = Process()
            server.executableURL = URL(fileURLWithPath: try Tools.system("ip"))
            server.arguments = ["netns", "exec", b, "iperf3", "-s", "-1", "-B", "10.80.0.2"]
            server.standardOutput = FileHandle.nullDevice
            server.standardError = FileHandle.nullDevice
            try server.run()
            defer { Lab.stop(server, timeout: 5) }
            var client: (status: Int32, output: String) = (1, "")
            for _ in 0..<20 {
                let r = try Lab.capture(["ip", "netns", "exec", a, "iperf3", "-c", "10.80.0.2", "-n", "200K", "-l", "8K", "-b", "5M"])
                client = (r.status, "\(r)")
                if r.status == 0 { break }
                Thread.sleep(forTimeInterval: 0.1)
            }
            #expect(client.status == 0, "\(client.output)")
            Thread.sleep(forTimeInterval: 0.3)
            Lab.stop(dumpA, timeout: 5)
            Lab.stop(dumpB, timeout: 5)

            let diff = try jsonObject(try s.ferrySucceeds(["pcap", "diff", "--json", outer, inner]).stdout)
            let sideA = try #require(diff["a"] as? [String: Any]), sideB = try #require(diff["b"] as? [String: Any])
            #expect(sideA["form"] as? String == "tunnel" && sideB["form"] as? String == "plain", "\(diff)")
            let compared = int(sideB, "compared") ?? 0
            #expect(compared >= 10 + 20, "B captured \(compared) frames")
            #expect(int(sideA, "compared") == compared, "\(sideA) \(sideB)")
            #expect(int(diff, "matched") == compared, "\(diff)")
            for key in ["lost", "unexpected", "duplicated", "altered", "reordered"] {
                #expect(int(diff, key) == 0, "\(key): \(diff)")
            }
            #expect(diff["clocksComparable"] as? Bool == true, "\(diff)")
            let flows = try #require(diff["flows"] as? [[String: Any]])
            let names = flows.compactMap { $0["flow"] as? String }
            #expect(names.contains("icmp 10.80.0.1 > 10.80.0.2") && names.contains("icmp 10.80.0.2 > 10.80.0.1"), "\(names)")
            #expect(names.contains { $0.hasPrefix("tcp 10.80.0.1:") && $0.hasSuffix(" > 10.80.0.2:5201") }, "\(names)")
            // Requests go A → B, replies B → A; each with its one-way delays.
            for f in flows {
                let delays = f["delays"] as? [String: Any]
                #expect(delays != nil && (int(delays ?? [:], "negative") ?? 1) == 0, "\(f)")
                if f["flow"] as? String == "icmp 10.80.0.1 > 10.80.0.2" { #expect(f["direction"] as? String == "a>b") }
                if f["flow"] as? String == "icmp 10.80.0.2 > 10.80.0.1" { #expect(f["direction"] as? String == "b>a") }
            }
            let text = try s.ferrySucceeds(["pcap", "diff", outer, inner]).stdout
            #expect(text.contains("matched \(compared); lost 0, altered 0, duplicated 0, reordered 0\n"), "\(text)")
        }
    }
}
