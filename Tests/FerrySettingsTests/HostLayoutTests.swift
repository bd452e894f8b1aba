import FerryWire
import Testing
@testable import FerrySettings

@Suite struct HostLayoutTests {
    func layout(_ yaml: String, _ edit: (inout RunOptions) -> Void = { _ in }) throws(SettingsError) -> HostLayout {
        var o = RunOptions()
        edit(&o)
        return try HostLayout(options: o, file: try ConfigFile(yaml: yaml))
    }

    func refusal(_ yaml: String, _ edit: (inout RunOptions) -> Void = { _ in }) -> String {
        do {
            let l = try layout(yaml, edit)
            return "accepted: \(l)"
        } catch {
            return error.description
        }
    }

    @Test func peersComeInEveryWrittenForm() throws {
        let l = try layout("""
            bridge: bridge0
            subnet: 172.18.0.1/16
            peer:
              - 192.168.99.101=172.17.0.0/16
              - {address: 192.168.99.102, subnet: 172.19.0.0/16}
              - address: 192.168.99.103
              - 192.168.99.104
            """)
        #expect(l.bridge == "bridge0")
        #expect(l.subnet?.description == "172.18.0.1/16" && l.subnet?.prefix.description == "172.18.0.0/16")
        #expect(l.peers.map(\.description) == ["192.168.99.101=172.17.0.0/16", "192.168.99.102=172.19.0.0/16",
                                               "192.168.99.103", "192.168.99.104"])
        #expect(l.mode == .tunnel && !l.setup)
        // One peer as a scalar.
        #expect(try layout("peer: 10.0.0.2").peers == [PeerSpec(address: IPAddress("10.0.0.2")!)])
    }

    @Test func theCommandLineReplacesTheFilesPeers() throws {
        let l = try layout("peer: [10.0.0.2, 10.0.0.3]") { $0.peer = ["10.0.0.9=10.50.0.0/16"] }
        #expect(l.peers.map(\.description) == ["10.0.0.9=10.50.0.0/16"])
    }

    @Test func badLayoutsAreRefusedWithTheFix() {
        let cases: [(String, (inout RunOptions) -> Void, String)] = [
            ("peer: [10.0.0.2=10.17.0.1/16]", { _ in }, "'10.17.0.1/16' has bits set past its length; write 10.17.0.0/16"),
            ("peer: [{address: 10.0.0.2, subnet: 10.17.0.0/16, mtu: 1400}]", { _ in }, "unknown key 'mtu' in a peer"),
            ("peer: [{subnet: 10.17.0.0/16}]", { _ in }, "needs `address:`"),
            ("peer: [10.0.0.2, 10.0.0.2=10.17.0.0/16]", { _ in }, "peer 10.0.0.2 is listed twice"),
            ("subnet: 10.17.0.1/16\npeer: [10.0.0.2=10.17.128.0/17]", { _ in },
             "the subnets of this host (subnet 10.17.0.1/16) (10.17.0.0/16) and peer 10.0.0.2 (10.17.128.0/17) overlap"),
            ("peer: [10.0.0.2=10.17.0.0/16, 10.0.0.3=10.16.0.0/12]", { _ in }, "overlap"),
            ("subnet: 10.17.0.0/16", { _ in }, "is the network's own address, not one an interface can hold; give the bridge's address, e.g. 10.17.0.1/16"),
            ("subnet: 10.17.255.255/16", { _ in }, "e.g. 10.17.0.1/16"),
            ("subnet: 10.17.0.1", { _ in }, "write the bridge's own address and its network's length"),
            ("mode: routes\npeer: [10.0.0.2=10.17.0.0/16, 10.0.0.3]", { _ in }, "peer 10.0.0.3 has none; write it as 10.0.0.3=SUBNET"),
            ("mode: direct", { _ in }, "--mode 'direct' is not a mode; use tunnel"),
            ("setup: true", { _ in }, "set-up needs the bridge"),
            ("setup: yes please", { _ in }, "config key 'setup' must be true or false"),
            ("", { $0.peer = ["10.0.0.2=fd00::/64x"] }, "--peer 10.0.0.2=SUBNET: 'fd00::/64x' is not a prefix"),
        ]
        for (yaml, edit, message) in cases {
            let got = refusal(yaml, edit)
            #expect(got.contains(message), "\(yaml): expected '\(message)' in '\(got)'")
        }
    }

    @Test func aHostAddressOnASmallNetworkIsKept() throws {
        // /31 and /32 have no network address to refuse (RFC 3021); nor has IPv6 /127.
        #expect(try layout("subnet: 10.0.0.0/31").subnet?.prefix.description == "10.0.0.0/31")
        #expect(try layout("subnet: 10.0.0.7/32").subnet?.prefix.description == "10.0.0.7/32")
        #expect(try layout("subnet: fd00:17::1/64").subnet?.prefix.description == "fd00:17::/64")
        #expect(refusal("subnet: fd00:17::/64").contains("e.g. fd00:17::1/64"))
    }

    @Test func modesAndSetUpResolve() throws {
        let l = try layout("mode: auto\nsetup: true\nbridge: br0\npeer: [10.0.0.2=10.17.0.0/16, 10.0.0.3]")
        #expect(l.mode == .auto && l.setup && l.bridge == "br0")
        let r = try layout("bridge: br0") { $0.mode = "ROUTES"; $0.peer = ["10.0.0.2=10.17.0.0/16"]; $0.setup = true }
        #expect(r.mode == .routes && r.setup)
    }
}
