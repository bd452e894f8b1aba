import FerryHost
import FerryLinux
import FerryWire
import Foundation
import Testing

/// The plan as a function: host state + layout (+ record) -> steps. States are written by hand,
/// as `ip` would show them, so that every branch is reached without touching a host.
struct SetupPlanTests {
    static func prefix(_ s: String) -> IPPrefix { try! IPPrefix(parsing: s) }
    static func address(_ s: String) -> IPAddress { IPAddress(s)! }
    static func interface(_ s: String) -> InterfaceAddress { try! InterfaceAddress(parsing: s) }
    static let ferry = RoutingProtocol.ferry, staticProtocol: UInt8 = 4, kernel: UInt8 = 2

    /// lo and eth0 (192.168.99.102/24, default via .1): a host before `ferry setup`.
    static let bare = HostState(
        links: [.init(index: 1, name: "lo", kind: nil, isUp: true, master: nil),
                .init(index: 2, name: "eth0", kind: nil, isUp: true, master: nil)],
        addresses: [.init(interfaceIndex: 1, address: address("127.0.0.1"), prefixLength: 8),
                    .init(interfaceIndex: 2, address: address("192.168.99.102"), prefixLength: 24)],
        routes: [.init(destination: prefix("0.0.0.0/0"), interfaceIndex: 2, gateway: address("192.168.99.1"), routingProtocol: 16),
                 .init(destination: prefix("192.168.99.0/24"), interfaceIndex: 2, gateway: nil, routingProtocol: kernel)])

    static let layout = SetupLayout(bridge: "bridge0", address: Self.interface("172.18.0.1/16"),
                                    routes: [PeerRoute(peer: address("192.168.99.101"), subnet: prefix("172.17.0.0/16"))])
    static let route17 = RouteEntry(destination: prefix("172.17.0.0/16"), device: "bridge0")

    /// `bare` after the set-up of `layout`: bridge0 (index 3), its address and connected route, Ferry's route.
    static var setUp: HostState {
        var s = bare
        s.links.append(.init(index: 3, name: "bridge0", kind: "bridge", isUp: true, master: nil))
        s.addresses.append(.init(interfaceIndex: 3, address: address("172.18.0.1"), prefixLength: 16))
        s.routes.append(.init(destination: prefix("172.18.0.0/16"), interfaceIndex: 3, gateway: nil, routingProtocol: kernel))
        s.routes.append(.init(destination: prefix("172.17.0.0/16"), interfaceIndex: 3, gateway: nil, routingProtocol: ferry))
        return s
    }

    @Test func aBareHostGetsTheBridgeItsAddressUpAndOneRoutePerPeer() throws {
        var layout = Self.layout
        layout.routes.append(PeerRoute(peer: Self.address("192.168.99.103"), subnet: Self.prefix("172.19.0.0/16")))
        let steps = try SetupPlan.setup(layout, state: Self.bare)
        #expect(steps.map(\.command) == [
            "ip link add bridge0 type bridge",
            "ip addr add 172.18.0.1/16 dev bridge0",
            "ip link set bridge0 up",
            "ip route add 172.17.0.0/16 dev bridge0 proto 245",
            "ip route add 172.19.0.0/16 dev bridge0 proto 245",
        ])
    }

    @Test func aHostAlreadySetUpNeedsNothing() throws {
        let record = SetupRecord(created: [.createBridge("bridge0"), .addAddress(Self.interface("172.18.0.1/16"), device: "bridge0"),
                                           .setUp("bridge0"), .addRoute(Self.route17)])
        #expect(try SetupPlan.setup(Self.layout, state: Self.setUp, record: record) == [])
        #expect(try SetupPlan.setup(Self.layout, state: Self.setUp) == [], "without a record too: the state decides")
    }

    @Test func anExistingBridgeIsAdoptedAndOnlyWhatIsMissingIsDone() throws {
        // bridge0 made by hand: down, no address.
        var state = Self.bare
        state.links.append(.init(index: 3, name: "bridge0", kind: "bridge", isUp: false, master: nil))
        #expect(try SetupPlan.setup(Self.layout, state: state).map(\.command) == [
            "ip addr add 172.18.0.1/16 dev bridge0", "ip link set bridge0 up", "ip route add 172.17.0.0/16 dev bridge0 proto 245",
        ])
        // With the address and up: only the route; a second address of the user's is left alone.
        state.links[2].isUp = true
        state.addresses.append(.init(interfaceIndex: 3, address: Self.address("172.18.0.1"), prefixLength: 16))
        state.addresses.append(.init(interfaceIndex: 3, address: Self.address("10.5.0.1"), prefixLength: 24))
        #expect(try SetupPlan.setup(Self.layout, state: state) == [.addRoute(Self.route17)])
    }

    @Test func whatIsInTheWayIsRefusedWithTheFix() {
        func refusal(_ state: HostState, _ layout: SetupLayout = Self.layout) -> String {
            do {
                let steps = try SetupPlan.setup(layout, state: state)
                return "planned \(steps)"
            } catch {
                return error.description
            }
        }
        var veth = Self.bare
        veth.links.append(.init(index: 3, name: "bridge0", kind: "veth", isUp: true, master: nil))
        #expect(refusal(veth).contains("bridge0 exists and is a veth device, not a bridge"))

        var taken = Self.bare
        taken.addresses.append(.init(interfaceIndex: 2, address: Self.address("172.18.0.1"), prefixLength: 16))
        #expect(refusal(taken).contains("172.18.0.1 is an address of eth0 already"))

        var otherLength = Self.setUp
        otherLength.addresses[2].prefixLength = 24
        #expect(refusal(otherLength).contains("bridge0 has 172.18.0.1/24 already, not 172.18.0.1/16"))

        // A route to the peer subnet that the user made, going elsewhere.
        var users = Self.bare
        users.routes.append(.init(destination: Self.prefix("172.17.0.0/16"), interfaceIndex: 2, gateway: Self.address("192.168.99.9"),
                                  routingProtocol: Self.staticProtocol))
        let text = refusal(users)
        #expect(text.contains("route to 172.17.0.0/16 already (via 192.168.99.9 dev eth0 proto 4)"), "\(text)")
        #expect(text.contains("Ferry did not make"))

        var overlapping = Self.layout
        overlapping.routes = [PeerRoute(peer: Self.address("192.168.99.101"), subnet: Self.prefix("172.18.128.0/17"))]
        #expect(refusal(Self.bare, overlapping).contains("overlaps this host's 172.18.0.0/16"))

        var twice = Self.layout
        twice.routes.append(PeerRoute(peer: Self.address("192.168.99.103"), subnet: Self.prefix("172.17.0.0/16")))
        #expect(refusal(Self.bare, twice).contains("peers 192.168.99.101 and 192.168.99.103 both have the subnet 172.17.0.0/16"))

        #expect(refusal(Self.bare, SetupLayout(bridge: "a-name-far-too-long", address: nil, routes: [])).contains("not a device name"))
    }

    @Test func aUsersRouteThatGoesTheSameWayIsAdoptedNotRecorded() throws {
        var state = Self.setUp
        state.routes[state.routes.count - 1].routingProtocol = Self.staticProtocol
        #expect(try SetupPlan.setup(Self.layout, state: state) == [])
        // And teardown, even from a record that lists the route, leaves it: it is not Ferry's.
        #expect(SetupPlan.teardown(SetupRecord(created: [.addRoute(Self.route17)]), state: state) == [])
    }

    @Test func ferrysRoutesFollowTheLayout() throws {
        // Ferry's route goes elsewhere now (the peer moved to routes mode): replaced.
        var layout = Self.layout
        layout.routes[0].target = .gateway(Self.address("192.168.99.101"), device: "eth0")
        let moved = RouteEntry(destination: Self.prefix("172.17.0.0/16"), device: "eth0", gateway: Self.address("192.168.99.101"))
        #expect(try SetupPlan.setup(layout, state: Self.setUp) == [.deleteRoute(Self.route17), .addRoute(moved)])
        #expect(SetupStep.addRoute(moved).command == "ip route add 172.17.0.0/16 via 192.168.99.101 dev eth0 proto 245")

        // The peer left the layout: its recorded route goes; an unrecorded one of Ferry's stays.
        var none = Self.layout
        none.routes = []
        #expect(try SetupPlan.setup(none, state: Self.setUp, record: SetupRecord(created: [.addRoute(Self.route17)]))
                == [.deleteRoute(Self.route17)])
        #expect(try SetupPlan.setup(none, state: Self.setUp) == [])
    }

    @Test func teardownUndoesOnlyWhatTheRecordSaysFerryMade() {
        let all = SetupRecord(created: [.createBridge("bridge0"), .addAddress(Self.interface("172.18.0.1/16"), device: "bridge0"),
                                        .setUp("bridge0"), .addRoute(Self.route17)])
        // Routes first, then the bridge (which takes its address and up state with it).
        #expect(SetupPlan.teardown(all, state: Self.setUp) == [.deleteRoute(Self.route17), .deleteBridge("bridge0")])

        // An adopted bridge: Ferry gave it its address and brought it up; both undone, the bridge stays.
        let adopted = SetupRecord(created: [.addAddress(Self.interface("172.18.0.1/16"), device: "bridge0"), .setUp("bridge0"),
                                            .addRoute(Self.route17)])
        #expect(SetupPlan.teardown(adopted, state: Self.setUp).map(\.command) == [
            "ip route del 172.17.0.0/16 dev bridge0 proto 245", "ip link set bridge0 down", "ip addr del 172.18.0.1/16 dev bridge0",
        ])
        // Only routes recorded: the bridge, adopted as it was, is untouched.
        #expect(SetupPlan.teardown(SetupRecord(created: [.addRoute(Self.route17)]), state: Self.setUp) == [.deleteRoute(Self.route17)])

        // What is gone already is not deleted again; a device of that name that is no bridge is not deleted.
        var gone = Self.bare
        gone.links.append(.init(index: 7, name: "bridge0", kind: "dummy", isUp: true, master: nil))
        #expect(SetupPlan.teardown(all, state: gone) == [])
        #expect(SetupPlan.teardown(SetupRecord(), state: Self.setUp) == [])
    }

    @Test func theRecordNotesCreationsOnceAndForgetsWhatIsDeleted() throws {
        var record = SetupRecord()
        let address = Self.interface("172.18.0.1/16")
        for step: SetupStep in [.createBridge("bridge0"), .addAddress(address, device: "bridge0"), .setUp("bridge0"),
                                .addRoute(Self.route17), .addRoute(Self.route17)] {
            record.note(step)
        }
        #expect(record.created.count == 4)
        #expect(record.routes == [Self.route17])
        let data = try JSONEncoder().encode(record)
        #expect(try JSONDecoder().decode(SetupRecord.self, from: data) == record)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"destination\":\"172.17.0.0\\/16\"") && text.contains("\"step\":\"createBridge\""), "\(text)")

        record.note(.deleteRoute(Self.route17))
        #expect(record.routes == [])
        record.note(.deleteBridge("bridge0"))
        #expect(record.created == [], "the bridge takes its address and up state with it")
    }
}
