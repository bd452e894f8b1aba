import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// `ferry doctor` on a namespace host: a clean host passes (exit 0); each fault planted
    /// alone gives exactly its finding, and running the fix's commands clears it. Every setting
    /// changed is the namespace's own (sysctls, iptables and nftables are per network namespace;
    /// this kernel's bridge-nf-call-iptables too).
    @Suite struct LiveDoctorTests {
        struct Run {
            var status: Int32
            var checks: [[String: Any]]
            var output: String

            var problems: [String] { checks.filter { $0["status"] as? String == "problem" }.compactMap { $0["name"] as? String } }
            func finding(_ name: String) -> [String: Any] { checks.first { $0["name"] as? String == name } ?? [:] }
            func detail(_ name: String) -> String { finding(name)["detail"] as? String ?? "" }
            func fix(_ name: String) -> String { finding(name)["fix"] as? String ?? "" }
        }

        /// A two-host lab whose host 0 passes every check: bridge0 and its port at the tunnel's
        /// MTU (1450 for VXLAN over a 1500-byte IPv4 underlay), loose-free rp_filter, forwarding
        /// on, and a config naming host 1 as the peer.
        static func cleanLab(_ tag: String, hosts: Int = 2) throws -> (LiveLab, String) {
            let live = try LiveLab(tag: tag, hosts: hosts, withoutIPv6: true)
            do {
                try live.build()
                let ns = live.host(0).namespace
                try live.ip(ns, "link", "set", "c0", "mtu", "1450")
                try live.ip(ns, "link", "set", "bridge0", "mtu", "1450")
                try live.exec(ns, ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.u0.rp_filter=0",
                                   "net.ipv4.conf.bridge0.rp_filter=0", "net.ipv4.ip_forward=1"])
                let config = live.file("h0.yaml")
                try """
                    tap: ferry0
                    bridge: bridge0
                    local: \(live.host(0).underlay)
                    peer:
                      - \(live.host(1).underlay)
                    encap: vxlan
                    vni: 42
                    """.write(toFile: config, atomically: true, encoding: .utf8)
                return (live, config)
            } catch {
                live.teardown()
                throw error
            }
        }

        static func doctor(_ live: LiveLab, config: String?, json: Bool = true) throws -> Run {
            var command = [live.ferryBinary, "doctor", "--docker-config", live.file("no-docker.json")]
            if let config { command += ["--config", config] }
            if json { command.append("--json") }
            let o = try live.attempt(live.host(0).namespace, command, timeout: 60)
            guard json else { return Run(status: o.status, checks: [], output: o.stdout + o.stderr) }
            let object = try? JSONSerialization.jsonObject(with: Data(o.stdout.utf8)) as? [String: Any]
            guard let checks = object?["checks"] as? [[String: Any]] else {
                throw UnexpectedOutput("ferry doctor --json printed no checks: exit \(o.status)\n\(o.stdout)\n\(o.stderr)")
            }
            return Run(status: o.status, checks: checks, output: o.stdout)
        }

        /// Runs the commands of a fix in host 0's namespace, up to the first alternative ("or …"):
        /// only lines that are ip, sysctl, iptables, nft or ethtool commands (never the lines
        /// that would persist a setting in /etc, which is the machine's, not the namespace's).
        static func apply(_ fix: String, _ live: LiveLab) throws {
            for line in fix.split(separator: "\n") {
                let command = String(line.split(separator: "#", maxSplits: 1)[0]).trimmingCharacters(in: .whitespaces)
                if command.hasPrefix("or ") { break }  // an alternative to what came before
                let words = command.split(separator: " ").map(String.init)
                guard let first = words.first, ["ip", "sysctl", "iptables", "nft", "ethtool"].contains(first) else { continue }
                try live.exec(live.host(0).namespace, words)
            }
        }

        /// Plants `fault` on a clean host 0, expects exactly `check` to be a problem with a fix
        /// containing `fix`, applies the fix and expects a clean run.
        static func expectFound(_ tag: String, check: String, fix expected: String, detail: String,
                                hosts: Int = 2, clear: ((LiveLab) throws -> Void)? = nil,
                                _ fault: (LiveLab, String) throws -> Void) throws {
            let (live, config) = try cleanLab(tag, hosts: hosts)
            defer { live.teardown() }
            let before = try doctor(live, config: config)
            #expect(before.status == 0 && before.problems.isEmpty, "not clean before the fault: \(before.output)")
            try fault(live, config)
            let found = try doctor(live, config: config)
            #expect(found.status == 1, "\(found.output)")
            #expect(found.problems == [check], "\(found.output)")
            #expect(found.fix(check).contains(expected), "fix: \(found.fix(check))")
            #expect(found.detail(check).contains(detail), "detail: \(found.detail(check))")
            print("[live doctor \(check)] \(found.detail(check))\n    fix: \(found.fix(check).replacingOccurrences(of: "\n", with: "\n         "))")
            if let clear { try clear(live) } else { try apply(found.fix(check), live) }
            let after = try doctor(live, config: config)
            #expect(after.status == 0 && after.problems.isEmpty, "the fix did not clear it: \(after.output)")
        }

        @Test func aCleanHostPasses() throws {
            let (live, config) = try Self.cleanLab("doc-clean")
            defer { live.teardown() }
            let run = try Self.doctor(live, config: config)
            #expect(run.status == 0, "\(run.output)")
            for check in run.checks {
                #expect(check["status"] as? String == "ok", "\(check)")
            }
            #expect(run.detail("peers").contains("10.99.0.2 answers (dev u0"), "\(run.output)")
            #expect(run.detail("duplicate_address").contains("no other host answered an ARP probe for 10.99.0.1 on u0"))
            let text = try Self.doctor(live, config: config, json: false)
            #expect(text.status == 0 && text.output.contains("No problems found."), "\(text.output)")
            // Without a config: the host's general state, peers skipped (not passed) for want of them.
            let general = try Self.doctor(live, config: nil)
            #expect(general.status == 0, "\(general.output)")
            #expect(general.finding("peers")["status"] as? String == "skipped")
        }

        @Test func aContainerMTUAboveTheTunnelsIsFound() throws {
            try Self.expectFound("doc-mtu", check: "mtu", fix: "ip link set dev c0 mtu 1450", detail: "c0 has MTU 1500") { live, _ in
                try live.ip(live.host(0).namespace, "link", "set", "c0", "mtu", "1500")
            }
        }

        @Test func strictRPFilterIsFound() throws {
            try Self.expectFound("doc-rpf", check: "rp_filter", fix: "sysctl -w net.ipv4.conf.all.rp_filter=2",
                                 detail: "strict on u0 (the underlay)") { live, _ in
                try live.exec(live.host(0).namespace, ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"])
            }
        }

        @Test func forwardingOffIsFound() throws {
            try Self.expectFound("doc-fwd", check: "ip_forward", fix: "sysctl -w net.ipv4.ip_forward=1",
                                 detail: "net.ipv4.ip_forward=0") { live, _ in
                try live.exec(live.host(0).namespace, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
            }
        }

        @Test func bridgeNetfilterWithAForwardPolicyOfDropIsFound() throws {
            guard FileManager.default.fileExists(atPath: "/proc/sys/net/bridge/bridge-nf-call-iptables") else {
                print("[live doctor br_netfilter] not run: br_netfilter is not loaded here, and the test does not load a module on the host")
                return
            }
            try Self.expectFound("doc-brnf", check: "br_netfilter", fix: "iptables -I FORWARD -i bridge0 -o bridge0 -j ACCEPT",
                                 detail: "frames crossing bridge0 are dropped") { live, _ in
                let ns = live.host(0).namespace
                let o = try live.attempt(ns, ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])
                guard o.status == 0 else { throw UnexpectedOutput("bridge-nf-call-iptables is not settable in a namespace here: \(o.stderr)") }
                try live.exec(ns, ["iptables", "-P", "FORWARD", "DROP"])
            }
        }

        @Test func aFirewallClosingTheVXLANPortIsFound() throws {
            try Self.expectFound("doc-fw", check: "firewall", fix: "iptables -I INPUT -s 10.99.0.2 -p udp --dport 4789 -j ACCEPT",
                                 detail: "UDP port 4789 (VXLAN) from 10.99.0.2 is dropped by iptables: -A INPUT -p udp -m udp --dport 4789 -j DROP") { live, _ in
                try live.exec(live.host(0).namespace, ["iptables", "-A", "INPUT", "-p", "udp", "--dport", "4789", "-j", "DROP"])
            }
        }

        @Test func unreachablePeersAreFound() throws {
            let (live, config) = try Self.cleanLab("doc-peer")
            defer { live.teardown() }
            // One peer on the underlay's subnet that nobody holds, one with no route at all.
            let text = try String(contentsOfFile: config, encoding: .utf8)
            try text.replacingOccurrences(of: "  - 10.99.0.2", with: "  - 10.99.0.2\n  - 10.99.0.9\n  - 10.98.0.2")
                .write(toFile: config, atomically: true, encoding: .utf8)
            let started = Date()
            let run = try Self.doctor(live, config: config)
            #expect(Date().timeIntervalSince(started) < 30, "the probes are bounded")
            #expect(run.status == 1)
            #expect(run.problems == ["peers"], "\(run.output)")
            #expect(run.detail("peers").contains("peer 10.99.0.9 (dev u0) did not answer"), "\(run.detail("peers"))")
            #expect(run.detail("peers").contains("no route to peer 10.98.0.2"), "\(run.detail("peers"))")
            #expect(run.detail("peers").contains("10.99.0.2 answers"), "\(run.detail("peers"))")
            #expect(run.fix("peers").contains("ip route add 10.98.0.2 via GATEWAY dev u0"))
            print("[live doctor peers] \(run.detail("peers"))")
        }

        /// Another host on the underlay holding the local address answers the ARP probe; the
        /// same address on a second interface of this host is found by the local check.
        @Test func aDuplicateLocalAddressIsFound() throws {
            try Self.expectFound("doc-dup", check: "duplicate_address", fix: "arping -D", detail: "another host answers ARP for 10.99.0.1 on u0",
                                 hosts: 3, clear: { live in
                                     // The fix is to re-address one of the hosts, by hand.
                                     try live.ip(live.host(2).namespace, "addr", "del", "10.99.0.1/32", "dev", "u0")
                                 }) { live, _ in
                try live.ip(live.host(2).namespace, "addr", "add", "10.99.0.1/32", "dev", "u0")
            }
        }

        @Test func theLocalAddressOnASecondInterfaceIsFound() throws {
            try Self.expectFound("doc-dup2", check: "duplicate_address", fix: "ip addr del 10.99.0.1/32 dev d0",
                                 detail: "10.99.0.1 is on 2 interfaces: u0, d0") { live, _ in
                let ns = live.host(0).namespace
                try live.ip(ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
                try live.ip(ns, "addr", "add", "10.99.0.1/32", "dev", "d0")
            }
        }

        /// A kernel vxlan device with tx checksum offload on is fine on this kernel (6.x) until a
        /// MASQUERADE --random-fully rule can NAT its outer packets again.
        @Test func theVXLANChecksumOffloadConditionIsFound() throws {
            try Self.expectFound("doc-csum", check: "vxlan_checksum_offload", fix: "ethtool -K vx0 tx-checksum-ip-generic off",
                                 detail: "vx0 has tx-checksum-ip-generic on") { live, config in
                let ns = live.host(0).namespace
                try live.ip(ns, "link", "add", "vx0", "type", "vxlan", "id", "7", "dstport", "8472", "local", "10.99.0.1", "dev", "u0")
                let alone = try Self.doctor(live, config: config)
                #expect(alone.status == 0, "a vxlan device alone on a 6.x kernel is not the bug: \(alone.output)")
                try live.exec(ns, ["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.17.0.0/16", "-j", "MASQUERADE", "--random-fully"])
            }
        }
    }
}
