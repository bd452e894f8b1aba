import FerryHost
import FerryLinux
import FerrySettings
import FerryWire
import Testing

/// Which peers the static-route modes route directly, from the host's routes.
struct OnLinkTests {
    typealias P = SetupPlanTests
    static let bare = SetupPlanTests.bare

    @Test func aPeerInAConnectedPrefixIsOnLinkAndOneBehindAGatewayIsNot() {
        #expect(OnLink.check(P.address("192.168.99.101"), in: Self.bare, bridge: "bridge0") == .onLink(device: "eth0"))
        #expect(OnLink.check(P.address("10.1.2.3"), in: Self.bare, bridge: "bridge0")
                == .notOnLink("10.1.2.3 is reached via the gateway 192.168.99.1 (dev eth0)"))
        var noDefault = Self.bare
        noDefault.routes.removeFirst()
        #expect(OnLink.check(P.address("10.1.2.3"), in: noDefault, bridge: "bridge0") == .notOnLink("there is no route to 10.1.2.3"))
        // A more specific route via a router wins over the connected prefix.
        var routed = Self.bare
        routed.routes.append(.init(destination: P.prefix("192.168.99.128/25"), interfaceIndex: 2, gateway: P.address("192.168.99.1"),
                                   routingProtocol: 4))
        if case .notOnLink = OnLink.check(P.address("192.168.99.200"), in: routed, bridge: "bridge0") {} else {
            Issue.record("a peer behind a more specific gateway route is not on-link")
        }
    }

    @Test func theModesChooseEachPeersRoute() throws {
        let peers = [PeerSpec(address: P.address("192.168.99.101"), subnet: P.prefix("172.17.0.0/16")),
                     PeerSpec(address: P.address("10.1.2.3"), subnet: P.prefix("172.19.0.0/16")),
                     PeerSpec(address: P.address("192.168.99.103"))]
        func layout(_ mode: NetworkMode) throws(SetupError) -> SetupLayout {
            try SetupLayout(HostLayout(bridge: "bridge0", subnet: P.interface("172.18.0.1/16"), peers: peers, mode: mode, setup: true),
                            state: Self.bare)
        }
        let auto = try layout(.auto)
        #expect(auto.routes.map(\.target) == [.gateway(P.address("192.168.99.101"), device: "eth0"), .bridge])
        let host = HostLayout(bridge: "bridge0", peers: peers, mode: .auto)
        #expect(auto.tunnelled(host) == [P.address("10.1.2.3"), P.address("192.168.99.103")],
                "the off-link peer, and the one without a subnet (the tunnel still carries what it learns)")
        #expect(try SetupPlan.setup(auto, state: Self.bare).map(\.command).suffix(2) == [
            "ip route add 172.17.0.0/16 via 192.168.99.101 dev eth0 proto 245", "ip route add 172.19.0.0/16 dev bridge0 proto 245",
        ])
        #expect(try layout(.tunnel).routes.allSatisfy { $0.target == .bridge })
        do {
            _ = try layout(.routes)
            Issue.record("routes mode with a peer behind a gateway was accepted")
        } catch {
            #expect(error.description.contains("peer 10.1.2.3 is not: 10.1.2.3 is reached via the gateway 192.168.99.1"), "\(error)")
            #expect(error.description.contains("use --mode auto"))
        }
    }
}
