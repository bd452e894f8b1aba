import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// The seed's procedure done by Ferry: hosts with no bridge and no routes, a config file
    /// each, `ferry setup` and `ferry run` from those files alone; containers on the two hosts
    /// ping each other; a second set-up changes nothing; teardown leaves each host as it was.
    @Suite struct LiveSetupTests {
        /// `ip -d link`, `ip -d addr` and `ip route` of a host, whitespace and bridge timers normalised.
        static func snapshot(_ live: LiveLab, _ ns: String) throws -> String {
            try [["-d", "link", "show"], ["-d", "addr", "show"], ["route", "show"]].map { args in
                try live.lab.run(["ip", "-n", ns] + args).stdout.replacing(/\w+_timer\s+[0-9.]+/, with: "").split(separator: "\n")
                    .map { $0.split(whereSeparator: \.isWhitespace).joined(separator: " ") }.joined(separator: "\n")
            }.joined(separator: "\n----\n")
        }

        /// Starts `ferry run --config FILE` on host `i` and waits until it answers on its control socket.
        static func run(_ live: LiveLab, _ i: Int, config: String) throws -> Process {
            try FileManager.default.createDirectory(atPath: "/run/ferry", withIntermediateDirectories: true)
            let process = try live.lab.spawn(live.host(i).namespace, [live.ferryBinary, "run", "--config", config],
                                             log: live.file("ferry-h\(i).log"))
            let ready = Lab.waitUntil(timeout: Lab.readyTimeout, interval: 0.1) {
                !process.isRunning
                    || (try? Lab.capture([live.ferryBinary, "ctl", "--control", live.lab.controlPath(i), "stats"], timeout: 5))?.status == 0
            }
            #expect(ready && process.isRunning, "ferry run on host \(i): \(live.logTail(i))")
            return process
        }

        /// Host `i`'s config: the tunnel, its bridge and subnet, and the other host with its subnet.
        static func config(_ live: LiveLab, _ i: Int) -> String {
            let h = live.host(i), other = live.host(1 - i)
            return """
                tap: ferry0
                bridge: bridge0
                subnet: \(h.bridgeAddress)/16
                setup: true
                local: \(h.underlay)
                encap: vxlan
                vni: 42
                control: \(live.lab.controlPath(i))
                stats-interval: 0
                peer:
                  - address: \(other.underlay)
                    subnet: \(other.subnet)

                """
        }

        @Test func setupThenRunFromConfigFilesThenTeardown() throws {
            let live = try LiveLab(tag: "setup", withoutIPv6: true, withBridges: false)
            // Named after the lab, so that the records (/run/ferry/<name>.setup.json) are the lab's too.
            let configs = (0..<2).map { live.file("\(live.lab.prefix)-h\($0).yaml") }
            defer {
                for c in configs {
                    unlink("/run/ferry/\(((c as NSString).lastPathComponent as NSString).deletingPathExtension).setup.json")
                }
                live.teardown()
            }
            try live.build()
            let ferry = live.ferryBinary
            var before: [String] = []
            // The underlay's carrier comes a moment after the lab is built: the snapshot is of the settled host.
            let settled = Lab.waitUntil(timeout: 10) {
                live.hosts.allSatisfy { h in
                    (try? live.lab.run(["ip", "-n", h.namespace, "link", "show", "u0"]).stdout.contains("NO-CARRIER")) == false
                }
            }
            #expect(settled, "the underlay has no carrier")
            for i in 0..<2 {
                try Self.config(live, i).write(toFile: configs[i], atomically: true, encoding: .utf8)
                before.append(try Self.snapshot(live, live.host(i).namespace))
            }
            let ns0 = live.host(0).namespace, ns1 = live.host(1).namespace

            // Host 0: a dry run changes nothing and says what a set-up would do; the set-up does it; a second changes nothing.
            let dry = try live.exec(ns0, [ferry, "setup", "--config", configs[0], "--dry-run"]).stdout
            #expect(dry == """
                ip link add bridge0 type bridge
                ip addr add 10.17.0.1/16 dev bridge0
                ip link set bridge0 up
                ip route add 10.18.0.0/16 dev bridge0 proto 245

                """, "\(dry)")
            #expect(try Self.snapshot(live, ns0) == before[0], "a dry run changes nothing")
            let first = try live.exec(ns0, [ferry, "setup", "--config", configs[0]]).stdout
            #expect(first.hasPrefix(dry) && first.contains("4 changes, recorded in /run/ferry/"), "\(first)")
            let second = try live.exec(ns0, [ferry, "setup", "--config", configs[0]]).stdout
            #expect(second.hasPrefix("nothing to change: bridge0 is up with 10.17.0.1/16"), "\(second)")

            // `ferry run` from the config alone: on host 0 its set-up finds nothing to do; on host 1 it does the set-up.
            var runs: [Process] = []
            for i in 0..<2 {
                runs.append(try Self.run(live, i, config: configs[i]))
                try live.lab.attachContainers(i)
            }
            #expect(live.logTail(0).contains("set-up: nothing to change"), "\(live.logTail(0))")
            #expect(live.logTail(1).contains("set-up: ip link add bridge0 type bridge"), "\(live.logTail(1))")
            for (i, ns) in [ns0, ns1].enumerated() {
                let routes = try live.lab.run(["ip", "-n", ns, "route", "show", "proto", "245"]).stdout
                #expect(routes == "\(live.host(1 - i).subnet) dev bridge0 scope link \n", "host \(i): \(routes)")
            }
            let ping = try live.ping(from: live.container(0).namespace, to: live.container(1).address, count: 5)
            #expect(ping.received == 5, "\(ping)")
            let back = try live.ping(from: live.container(1).namespace, to: live.container(0).address, count: 5)
            #expect(back.received == 5, "\(back)")
            print("[live setup] pings 10.17 -> 10.18 \(ping.received)/\(ping.transmitted), back \(back.received)/\(back.transmitted)")
            for p in runs { Lab.stop(p) }
            #expect(runs.allSatisfy { !$0.isRunning && $0.terminationStatus == 0 }, "\(live.logTail(0))\n\(live.logTail(1))")
            #expect(try Self.snapshot(live, ns0).contains("bridge0"), "the set-up outlives ferry run")

            // Teardown: each host as it was before the set-up (the containers' legs leave the bridge with it).
            for i in 0..<2 {
                let undone = try live.exec(live.host(i).namespace, [ferry, "teardown", "--config", configs[i]]).stdout
                #expect(undone == "ip route del \(live.host(1 - i).subnet) dev bridge0 proto 245\nip link del bridge0\n", "\(undone)")
                let after = try Self.snapshot(live, live.host(i).namespace)
                #expect(after == before[i], "host \(i) after teardown differs:\n\(after)\n--- before ---\n\(before[i])")
            }
        }
    
        /// `--mode auto` on three hosts: 0 and 1 share an L2 segment, 2 is behind a router (the
        /// switch namespace, routing between the segment and a leg of its own). Containers in
        /// every pair ping; on host 0's port of the shared segment, 0 and 1 talk without
        /// encapsulation (plain ICMP between their containers, no VXLAN between them) and 0 and
        /// 2 through VXLAN.
        @Test func autoModeRoutesOnLinkPeersAndTunnelsToTheOthers() throws {
            let live = try LiveLab(tag: "auto", hosts: 3, withoutIPv6: true, withBridges: false)
            let configs = (0..<3).map { live.file("\(live.lab.prefix)-h\($0).yaml") }
            defer {
                for c in configs {
                    unlink("/run/ferry/\(((c as NSString).lastPathComponent as NSString).deletingPathExtension).setup.json")
                }
                live.teardown()
            }
            try live.build()
            let sw = live.lab.switchNamespace
            // Host 2 behind the router: its port leaves the underlay bridge for a subnet of its own.
            try live.ip(sw, "link", "set", "p2", "nomaster")
            try live.ip(sw, "addr", "add", "10.99.0.254/24", "dev", "ubr")
            try live.ip(sw, "addr", "add", "10.98.0.254/24", "dev", "p2")
            try live.exec(sw, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            let ns = live.hosts.map(\.namespace)
            try live.ip(ns[2], "addr", "flush", "dev", "u0")
            try live.ip(ns[2], "addr", "add", "10.98.0.3/24", "dev", "u0")
            try live.ip(ns[2], "route", "add", "10.99.0.0/24", "via", "10.98.0.254")
            for h in 0..<2 { try live.ip(ns[h], "route", "add", "10.98.0.0/24", "via", "10.99.0.254") }
            let underlay = ["10.99.0.1", "10.99.0.2", "10.98.0.3"]

            for i in 0..<3 {
                let h = live.host(i)
                var text = """
                    tap: ferry0
                    bridge: bridge0
                    subnet: \(h.bridgeAddress)/16
                    mode: auto
                    setup: true
                    local: \(underlay[i])
                    encap: vxlan
                    vni: 42
                    control: \(live.lab.controlPath(i))
                    stats-interval: 0
                    peer:

                    """
                for o in live.hosts where o.index != i { text += "  - {address: \(underlay[o.index]), subnet: \(o.subnet)}\n" }
                try text.write(toFile: configs[i], atomically: true, encoding: .utf8)
            }
            // Routes mode refuses, changing nothing, on a host whose peers are behind a router.
            let refused = try live.attempt(ns[2], [live.ferryBinary, "setup", "--config", configs[2], "--mode", "routes"])
            #expect(refused.status != 0 && refused.stderr.contains("peer 10.99.0.1 is not: 10.99.0.1 is reached via the gateway "
                                                                  + "10.98.0.254 (dev u0); use --mode auto"), "\(refused.stderr)")
            #expect(try live.lab.run(["ip", "-n", ns[2], "link", "show"]).stdout.contains("bridge0") == false)
            // ferry run in routes mode with only on-link peers has nothing to tunnel: refused before any change.
            let nothing = try live.attempt(ns[0], [live.ferryBinary, "run", "--config", configs[0], "--mode", "routes",
                                                   "--peer", "10.99.0.2=10.18.0.0/16"])
            #expect(nothing.status != 0 && nothing.stderr.contains("every peer is routed directly (--mode routes): there is nothing to "
                                                                   + "tunnel"), "\(nothing.stderr)")
            #expect(try live.lab.run(["ip", "-n", ns[0], "link", "show"]).stdout.contains("bridge0") == false)
            var runs: [Process] = []
            defer { for p in runs { Lab.stop(p) } }
            for i in 0..<3 {
                runs.append(try Self.run(live, i, config: configs[i]))
                try live.lab.attachContainers(i)
            }
            let routes = try (0..<3).map { try live.lab.run(["ip", "-n", ns[$0], "route", "show", "proto", "245"]).stdout }
            #expect(routes[0] == "10.18.0.0/16 via 10.99.0.2 dev u0 \n10.19.0.0/16 dev bridge0 scope link \n", "\(routes[0])")
            #expect(routes[1] == "10.17.0.0/16 via 10.99.0.1 dev u0 \n10.19.0.0/16 dev bridge0 scope link \n", "\(routes[1])")
            #expect(routes[2] == "10.17.0.0/16 dev bridge0 scope link \n10.18.0.0/16 dev bridge0 scope link \n", "\(routes[2])")

            #expect(try live.stats(0).hostRoutes == ["10.18.0.0/16 via 10.99.0.2 dev u0", "10.19.0.0/16 dev bridge0"])
            let table = try live.ctl(0, "stats", json: false)
            #expect(table.contains("routes installed by set-up\n  10.18.0.0/16 via 10.99.0.2 dev u0\n  10.19.0.0/16 dev bridge0\n"),
                    "\(table)")
            let capture = live.file("p0.pcap")
            let tcpdump = try live.spawn(sw, ["timeout", "60", "tcpdump", "-i", "p0", "-n", "-U", "-w", capture], log: "tcpdump.log")
            _ = Lab.waitUntil(timeout: 10) { (try? String(contentsOfFile: live.file("tcpdump.log"), encoding: .utf8))?.contains("listening") == true }
            var results: [String] = []
            for (a, b) in [(0, 1), (0, 2), (1, 2)] {
                let ping = try live.ping(from: live.container(a).namespace, to: live.container(b).address, count: 5)
                #expect(ping.received == 5, "\(a) -> \(b): \(ping)\n\(live.logTail(a))")
                results.append("\(a)->\(b) \(ping.received)/\(ping.transmitted)")
            }
            kill(tcpdump.processIdentifier, SIGINT)
            _ = Lab.waitUntil(timeout: 10) { !tcpdump.isRunning }
            func count(_ filter: String) throws -> Int {
                try live.lab.run(["tcpdump", "-r", capture, "-n", filter]).stdout.split(separator: "\n").count
            }
            let direct = try count("icmp and host 10.17.0.2 and host 10.18.0.2")
            let vxlanOnLink = try count("udp port 4789 and host 10.99.0.1 and host 10.99.0.2")
            let vxlanRouted = try count("udp port 4789 and host 10.99.0.1 and host 10.98.0.3")
            print("[live auto] pings \(results.joined(separator: ", ")); on p0: \(direct) plain ICMP 10.17<->10.18, "
                  + "\(vxlanOnLink) VXLAN 0<->1, \(vxlanRouted) VXLAN 0<->2")
            #expect(direct >= 10, "echo requests and replies between the on-link hosts' containers cross unencapsulated")
            #expect(vxlanOnLink == 0, "no encapsulation between the on-link hosts")
            #expect(vxlanRouted >= 10, "VXLAN to the host behind the router")

            // At run time, on h0: the on-link peer removed and added again goes from its direct
            // route to none and back, never into the tunnel; the peer behind the router comes
            // back onto the bridge, into the tunnel.
            func ctl(_ words: String...) throws -> String {
                let o = try Lab.capture([live.ferryBinary, "ctl", "--control", live.lab.controlPath(0)] + words, timeout: 20)
                #expect(o.status == 0, "ferry ctl \(words): \(o)")
                return o.stdout
            }
            func ours() throws -> String { try live.lab.run(["ip", "-n", ns[0], "route", "show", "proto", "245"]).stdout }
            let tunnelledBefore = try live.stats(0).peers.count
            #expect(try ctl("peer", "del", "10.99.0.2").contains("peer 10.99.0.2 removed (it was routed directly) with its route"))
            #expect(try ours() == "10.19.0.0/16 dev bridge0 scope link \n")
            #expect(try live.ping(from: live.container(0).namespace, to: live.container(1).address, count: 1).received == 0)
            #expect(try ctl("peer", "add", "10.99.0.2=10.18.0.0/16").contains("peer 10.99.0.2 routed directly (on this host's network: no tunnel)"))
            #expect(try ours() == "10.18.0.0/16 via 10.99.0.2 dev u0 \n10.19.0.0/16 dev bridge0 scope link \n")
            #expect(try live.stats(0).peers.count == tunnelledBefore, "the on-link peer stays out of the tunnel")
            #expect(try live.ping(from: live.container(0).namespace, to: live.container(1).address, count: 3).received >= 2)
            #expect(try ctl("peer", "del", "10.98.0.3").contains("peer 10.98.0.3 removed, with"))
            #expect(try ours() == "10.18.0.0/16 via 10.99.0.2 dev u0 \n")
            #expect(try ctl("peer", "add", "10.98.0.3=10.19.0.0/16").contains("peer 10.98.0.3 added"))
            #expect(try ours() == "10.18.0.0/16 via 10.99.0.2 dev u0 \n10.19.0.0/16 dev bridge0 scope link \n")
            #expect(try live.ping(from: live.container(0).namespace, to: live.container(2).address, count: 3).received >= 2)

            for p in runs { Lab.stop(p) }
            runs.removeAll()
            for i in 0..<3 {
                _ = try live.exec(ns[i], [live.ferryBinary, "teardown", "--config", configs[i]])
                #expect(try live.lab.run(["ip", "-n", ns[i], "route", "show", "proto", "245"]).stdout.isEmpty)
            }
        }
    }
}
