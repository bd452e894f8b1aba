@testable import FerryDoctor
import FerryLinux
import FerryWire
import Foundation
import Testing

@Suite struct DoctorPeerTests {
    @Test func aPeerWithNoRouteIsAProblem() throws {
        var host = cleanHost()
        host.routes[peer] = .failure(RouteLookupFailure(reason: "no route to 10.99.0.2 (Network is unreachable)", noRoute: true))
        host.echoes[peer] = nil
        #expect(problems(plan(), host) == ["peers"])
        let f = try #require(Doctor.check(plan(), host).finding("peers"))
        #expect(f.detail.contains("no route to peer 10.99.0.2"))
        #expect(f.fix?.hasPrefix("ip route add 10.99.0.2 via GATEWAY dev u0") == true)
    }

    @Test func aSilentPeerIsAProblemAndAnUnsentProbeIsNot() throws {
        var host = cleanHost()
        host.echoes[peer] = .silent
        let f = try #require(Doctor.check(plan(), host).finding("peers"))
        #expect(f.status == .problem)
        #expect(f.detail.contains("peer 10.99.0.2 (dev u0) did not answer"))
        host.echoes[peer] = .failed("raw ICMP socket: Operation not permitted (needs root or CAP_NET_RAW)")
        let g = try #require(Doctor.check(plan(), host).finding("peers"))
        #expect(g.status == .skipped)
        #expect(g.detail.contains("needs root"))
    }

    @Test func aPeerThatIsThisHostIsAProblem() {
        var host = cleanHost()
        host.routes[local] = .success(RouteAnswer(device: "lo", gateway: nil, type: "local"))
        #expect(Doctor.check(plan(peers: [local]), host).finding("peers")?.status == .problem)
        #expect(Doctor.check(DoctorPlan(), host).finding("peers")?.status == .skipped)
    }

    // MARK: duplicate address

    @Test func theLocalAddressOnTwoInterfacesIsAProblem() throws {
        var host = cleanHost()
        host.interfaces.append(.init(name: "dummy0", mtu: 1500, addresses: [.init(local, prefixLength: 32)]))
        #expect(problems(plan(), host) == ["duplicate_address"])
        let f = try #require(Doctor.check(plan(), host).finding("duplicate_address"))
        #expect(f.detail.contains("10.99.0.1 is on 2 interfaces: u0, dummy0"))
        #expect(f.fix == "ip addr del 10.99.0.1/32 dev dummy0   # keep it only on u0")
    }

    @Test func anotherHostAnsweringARPIsAProblem() throws {
        var host = cleanHost()
        host.arp = .answered(interface: "u0", others: [MACAddress("02:00:00:00:00:09")!])
        let f = try #require(Doctor.check(plan(), host).finding("duplicate_address"))
        #expect(f.status == .problem)
        #expect(f.detail.contains("another host answers ARP for 10.99.0.1 on u0: 02:00:00:00:00:09"))
        #expect(f.fix?.contains("arping -D -c 2 -I u0 10.99.0.1") == true)
        host.arp = .notRun("packet sockets need root or CAP_NET_RAW")
        let g = try #require(Doctor.check(plan(), host).finding("duplicate_address"))
        #expect(g.status == .ok)
        #expect(g.detail.contains("ARP probe not run: packet sockets need root"))
    }

    @Test func failedIPv6DuplicateAddressDetectionIsAProblem() {
        let v6 = IPAddress("fd00:99::1")!
        var host = cleanHost()
        host.interfaces[1].addresses.append(.init(v6, prefixLength: 64, dadFailed: true))
        var p = plan(peers: [])
        p.local = v6
        #expect(Doctor.check(p, host).finding("duplicate_address")?.status == .problem)
        // Without a config every address is looked at, and so is this one.
        #expect(Doctor.check(DoctorPlan(), host).finding("duplicate_address")?.status == .problem)
    }

    // MARK: vxlan checksum offload

    @Test func checksumOffloadOnAVXLANDeviceOnAKernelBefore57IsAProblem() throws {
        var host = cleanHost()
        host.kernelRelease = "5.4.0-150-generic"
        host.interfaces.append(.init(name: "flannel.1", mtu: 1450, kind: "vxlan", transmitChecksum: true))
        #expect(problems(plan(), host) == ["vxlan_checksum_offload"])
        let f = try #require(Doctor.check(plan(), host).finding("vxlan_checksum_offload"))
        #expect(f.detail.contains("older than 5.7"))
        #expect(f.fix?.hasPrefix("ethtool -K flannel.1 tx-checksum-ip-generic off\n") == true)
        // The offload off: fine on any kernel.
        host.interfaces[4].transmitChecksum = false
        #expect(problems(plan(), host).isEmpty)
    }

    @Test func onANewerKernelOnlyARandomFullyMasqueradeMakesItAProblem() throws {
        var host = cleanHost()
        host.kernelRelease = "6.18.44-fc-v1272"
        host.interfaces.append(.init(name: "vx0", mtu: 1450, kind: "vxlan", transmitChecksum: true))
        #expect(problems(plan(), host).isEmpty)
        host.iptables = .output("*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.17.0.0/16 -j MASQUERADE --random-fully\nCOMMIT\n")
        let f = try #require(Doctor.check(plan(), host).finding("vxlan_checksum_offload"))
        #expect(f.status == .problem)
        #expect(f.detail.contains("MASQUERADE --random-fully"))
        #expect(!f.detail.contains("older than 5.7"))
        #expect(Doctor.kernelVersion("5.6.19") ?? (0, 0) < (5, 7))
        #expect(!(Doctor.kernelVersion("5.10.0-28-amd64") ?? (0, 0) < (5, 7)))
    }
}

@Suite struct HostReaderTests {
    /// A planted /proc: the reader's parsing of if_inet6 flags and the route table.
    @Test func readsDADFailuresAndTheDefaultRouteFromProc() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-doctor-proc-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/net", withIntermediateDirectories: true)
        try """
            fd000099000000000000000000000001 03 40 00 88       u0
            fe80000000000000c0ffeefffe000001 03 40 20 80       u0
            """.write(toFile: root + "/net/if_inet6", atomically: true, encoding: .utf8)
        try """
            Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
            u0\t0063000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
            eth9\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
            """.write(toFile: root + "/net/route", atomically: true, encoding: .utf8)
        var reader = HostReader()
        reader.proc = root
        #expect(reader.dadFailed() == ["u0 fd00:99::1"])
        #expect(reader.defaultRouteInterface() == "eth9")
    }

    @Test func readsDockersMTU() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-doctor-daemon-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let reader = HostReader()
        #expect(reader.docker(path) == .absent)
        try #"{"bridge": "bridge0", "mtu": 1500}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(reader.docker(path) == .mtu(1500))
        try #"{"bridge": "bridge0"}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(reader.docker(path) == .mtu(nil))
        try "not json".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(reader.docker(path) == .unreadable("not a JSON object"))
    }
}
