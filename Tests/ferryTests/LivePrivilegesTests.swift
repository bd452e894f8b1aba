import FerryCapture
import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// `ferry run --user nobody` on both hosts: after set-up every thread runs as nobody with
    /// only the capabilities Ferry still needs (none; CAP_NET_ADMIN with GRE's link path), the
    /// bounding set cut to them, and the tunnel works as before: ping, a TCP transfer, the link
    /// path, a capture file written after the drop, the control socket removed at exit.
    @Suite struct LivePrivilegesTests {
        struct Variant: Sendable, CustomTestStringConvertible {
            var name: String
            var tag: String
            var tunnel: [String]
            /// CapEff, CapPrm and CapBnd as /proc/PID/status must show them.
            var kept: UInt64
            var link: Bool
            var testDescription: String { name }
        }

        static let capNetAdmin: UInt64 = 1 << 12

        static let variants = [
            Variant(name: "vxlan, nothing kept", tag: "usrvx", tunnel: ["--encap", "vxlan", "--vni", "42"], kept: 0, link: false),
            Variant(name: "gre on the link path, cap_net_admin kept", tag: "usrgl",
                    tunnel: ["--encap", "gre", "--key", "42", "--gre-path", "link"], kept: capNetAdmin, link: true),
        ]

        /// The fields of /proc/PID/status (or of one of its threads) by name.
        static func status(_ path: String) throws -> [String: String] {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            var fields: [String: String] = [:]
            for line in text.split(separator: "\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            return fields
        }

        static func capabilityNames(_ mask: UInt64) -> String {
            let names = [12: "cap_net_admin", 13: "cap_net_raw"]
            let bits = (0..<64).filter { mask & (1 << UInt64($0)) != 0 }
            return bits.isEmpty ? "none" : bits.map { names[$0] ?? "cap \($0)" }.joined(separator: ",")
        }

        @Test(arguments: variants)
        func runsAsNobodyWithOnlyWhatItNeeds(_ v: Variant) throws {
            let live = try LiveLab(tag: v.tag, withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let nobody = try live.exec(live.host(0).namespace, ["id", "-u", "nobody"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let capture = live.file("h0-inner.pcap")
            var processes: [Int32] = []
            for i in 0..<2 {
                // h1 serves /metrics on a port only root may bind: bound before the drop, served after it.
                let extra = ["--user", "nobody"] + (i == 0 ? ["--capture", capture, "--capture-point", "inner"] : ["--metrics", "127.0.0.1:80"])
                processes.append(try live.startFerry(on: i, tunnel: v.tunnel, extra: extra).processIdentifier)
            }
            let (a, b) = (live.container(0), live.container(1))

            for (i, pid) in processes.enumerated() {
                let s = try Self.status("/proc/\(pid)/status")
                #expect(s["Uid"]?.split(whereSeparator: \.isWhitespace).allSatisfy { $0 == nobody } == true, "h\(i): Uid \(s["Uid"] ?? "?")")
                #expect(s["Groups"].map { !$0.split(separator: " ").contains("0") } == true, "h\(i): still in group 0: \(s["Groups"] ?? "?")")
                for key in ["CapEff", "CapPrm", "CapBnd"] {
                    let mask = s[key].flatMap { UInt64($0, radix: 16) }
                    let shown = mask.map(Self.capabilityNames) ?? "?", wanted = Self.capabilityNames(v.kept)
                    #expect(mask == v.kept, "h\(i): \(key) \(s[key] ?? "?") is \(shown), not \(wanted)")
                }
                #expect(s["CapInh"].flatMap { UInt64($0, radix: 16) } == 0, "h\(i): CapInh \(s["CapInh"] ?? "?")")
                #expect(s["NoNewPrivs"] == "1", "h\(i): NoNewPrivs \(s["NoNewPrivs"] ?? "?")")
                // Every thread, the workers and the control thread included.
                let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")
                #expect(tasks.count >= 2, "h\(i): threads \(tasks)")
                for t in tasks {
                    let ts = try Self.status("/proc/\(pid)/task/\(t)/status")
                    #expect(ts["Uid"]?.split(whereSeparator: \.isWhitespace).first.map(String.init) == nobody
                            && ts["CapEff"].flatMap { UInt64($0, radix: 16) } == v.kept,
                            "h\(i) thread \(t) (\(ts["Name"] ?? "?")): Uid \(ts["Uid"] ?? "?") CapEff \(ts["CapEff"] ?? "?")")
                }
                let log = (try? String(contentsOfFile: live.ferryLog(i), encoding: .utf8)) ?? ""
                #expect(log.contains("running as nobody"), "h\(i):\n\(live.logTail(i))")
            }

            let there = try live.ping(from: a.namespace, to: b.address, count: 10, interval: 0.1)
            #expect(there.allReceived, "\(there)\n\(live.logTail(0))")
            let back = try live.ping(from: b.namespace, to: a.address, count: 10, interval: 0.1)
            #expect(back.allReceived, "\(back)\n\(live.logTail(1))")
            let metrics = try live.exec(live.host(1).namespace, [live.python, "-c",
                "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:80/metrics', timeout=10).read().decode())"])
            #expect(metrics.stdout.contains("ferry_tap_rx_frames_total "), "h1's /metrics as nobody: \(metrics.stdout.prefix(300))")
            let t = try live.transfer(bytes: 8 * Live.mebibyte, from: a.namespace, to: b.namespace, address: b.address, port: 5201)
            #expect(t.sentSHA256 == t.receivedSHA256 && t.receivedBytes == t.bytes, "\(t)")
            let s0 = try live.stats(0)
            if v.link {
                #expect(try s0.counter("link_sent_packets") > 0, "the link path was not taken as nobody: \(s0)\n\(live.logTail(0))")
            }
            for i in 0..<2 {
                let log = (try? String(contentsOfFile: live.ferryLog(i), encoding: .utf8)) ?? ""
                #expect(!log.contains("not permitted") && !log.contains("ermission denied"), "h\(i):\n\(live.logTail(i))")
            }

            for (i, status) in live.stopFerries() {
                #expect(status == 0, "h\(i) exited \(status):\n\(live.logTail(i))")
            }
            // The capture was written through the file opened before the drop.
            let frames = try PcapFileReader(path: capture).readAll()
            #expect(frames.count >= 20, "\(frames.count) frames captured")
            // The socket files of root's /run/ferry are gone all the same.
            for i in 0..<2 {
                let path = live.lab.controlPath(i)
                let gone = Lab.waitUntil(timeout: 5, interval: 0.05) { !FileManager.default.fileExists(atPath: path) }
                #expect(gone, "h\(i)'s control socket \(path) is left behind")
            }
            print("[live \(v.tag)] uid \(nobody), CapEff/CapPrm/CapBnd \(String(v.kept, radix: 16)) "
                  + "(\(Self.capabilityNames(v.kept))), \(t), \(frames.count) frames captured")
        }
    }
}
