@testable import FerryDoctor
import FerryLinux
import FerryWire
import Foundation
import Testing

@Suite struct DoctorTests {
    @Test func aCleanHostPassesEveryCheck() throws {
        let report = Doctor.check(plan(), cleanHost())
        #expect(report.exitCode == 0)
        #expect(report.checks.map(\.name) == ["mtu", "rp_filter", "ip_forward", "br_netfilter", "firewall", "peers",
                                              "duplicate_address", "vxlan_checksum_offload"])
        for f in report.checks { #expect(f.status == .ok, "\(f.name): \(f.detail)"); #expect(f.fix == nil) }
    }

    @Test func reportJSONHasNameStatusDetailFix() throws {
        var host = cleanHost()
        host.sysctls["net.ipv4.ip_forward"] = "0"
        let data = try JSONEncoder().encode(Doctor.check(plan(), host))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let checks = try #require(object["checks"] as? [[String: Any]])
        let forward = try #require(checks.first { $0["name"] as? String == "ip_forward" })
        #expect(forward["status"] as? String == "problem")
        #expect((forward["fix"] as? String)?.hasPrefix("sysctl -w net.ipv4.ip_forward=1") == true)
        #expect(checks.first { $0["name"] as? String == "mtu" }?["status"] as? String == "ok")
    }

    // MARK: MTU

    @Test func containerPortAboveTheTunnelMTUIsAProblem() throws {
        var host = cleanHost()
        host.interfaces[3].mtu = 1500
        #expect(problems(plan(), host) == ["mtu"])
        let f = try #require(Doctor.check(plan(), host).finding("mtu"))
        #expect(f.detail.contains("c0 has MTU 1500"))
        #expect(f.detail.contains(": above 1450 bytes, what the tunnel carries (underlay MTU 1500 on u0 less 36 bytes of VXLAN over IPv4"))
        #expect(f.fix?.hasPrefix("ip link set dev c0 mtu 1450") == true)
        #expect(f.fix?.contains("ip link set dev u0 mtu 1550") == true)
    }

    @Test func theLimitFollowsTheEncapsulationAndTheConfiguredUnderlayMTU() throws {
        var p = plan()
        p.encapsulation = .gre(GREOptions(key: 42))
        // GRE with a key: 20 IP + 8 GRE; 1500 - 28 - 14 = 1458.
        #expect(p.containerMTULimit(underlayMTU: 1500) == 1458)
        p.encapsulation = .vxlan(vni: 1)
        p.local = IPAddress("fd00:99::1")
        #expect(p.containerMTULimit(underlayMTU: 1500) == 1430)
        var host = cleanHost()
        var q = plan()
        q.underlayMTU = 1400
        #expect(problems(q, host) == ["mtu"])
        host.interfaces[2].mtu = 1350
        host.interfaces[3].mtu = 1350
        #expect(problems(q, host).isEmpty)
    }

    @Test func dockersDaemonMTUAboveTheTunnelIsAProblem() throws {
        var host = cleanHost()
        host.docker = .mtu(1500)
        let f = try #require(Doctor.check(plan(), host).finding("mtu"))
        #expect(f.status == .problem)
        #expect(f.fix?.contains("set \"mtu\": 1450 in /etc/docker/daemon.json") == true)
        host.docker = .mtu(1450)
        #expect(Doctor.check(plan(), host).finding("mtu")?.status == .ok)
    }

    @Test func noUnderlayMeansTheMTUCheckIsSkippedNotPassed() {
        var host = cleanHost()
        host.interfaces.removeAll { $0.name == "u0" }
        host.routes = [:]
        #expect(Doctor.check(plan(), host).finding("mtu")?.status == .skipped)
    }

    // MARK: rp_filter

    @Test func strictReversePathFilteringOnTheUnderlayIsAProblem() throws {
        var host = cleanHost()
        host.sysctls["net.ipv4.conf.u0.rp_filter"] = "1"
        #expect(problems(plan(), host) == ["rp_filter"])
        let f = try #require(Doctor.check(plan(), host).finding("rp_filter"))
        #expect(f.fix?.hasPrefix("sysctl -w net.ipv4.conf.u0.rp_filter=2\n") == true)
        #expect(f.detail.contains("every peer's route leaves by u0"))
    }

    @Test func allStrictMakesEveryInterfaceStrictAndTheFixSetsAll() throws {
        var host = cleanHost()
        host.sysctls["net.ipv4.conf.all.rp_filter"] = "1"
        host.sysctls["net.ipv4.conf.bridge0.rp_filter"] = "0"
        // A peer routed out of another interface is dropped now.
        host.routes[peer] = .success(RouteAnswer(device: "eth1", gateway: nil, type: "unicast"))
        host.interfaces.append(.init(name: "eth1", mtu: 1500))
        let f = try #require(Doctor.check(plan(), host).finding("rp_filter"))
        #expect(f.status == .problem)
        #expect(f.fix?.hasPrefix("sysctl -w net.ipv4.conf.all.rp_filter=2\n") == true)
        #expect(f.detail.contains("strict on u0 (the underlay), bridge0 (a container bridge)"))
        #expect(f.detail.contains("leaves by eth1, not u0"))
        #expect(f.fix?.contains("/etc/sysctl.d/90-ferry.conf") == true)
    }

    @Test func looseFilteringPasses() {
        var host = cleanHost()
        host.sysctls["net.ipv4.conf.all.rp_filter"] = "2"
        host.sysctls["net.ipv4.conf.u0.rp_filter"] = "1"  // max(2, 1) = 2: loose
        #expect(Doctor.check(plan(), host).finding("rp_filter")?.status == .ok)
    }

    // MARK: ip_forward

    @Test func forwardingOffIsAProblem() throws {
        var host = cleanHost()
        host.sysctls["net.ipv4.ip_forward"] = "0"
        #expect(problems(plan(), host) == ["ip_forward"])
        host.sysctls["net.ipv4.ip_forward"] = nil
        #expect(Doctor.check(plan(), host).finding("ip_forward")?.status == .skipped)
    }
}
