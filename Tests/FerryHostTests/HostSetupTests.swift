import FerryHost
import FerryLinux
import FerrySettings
import FerryWire
import Foundation
import Testing

/// Set-up, a second set-up, route keeping and teardown over rtnetlink in a namespace the test
/// builds, checked against what `ip` shows there.
@Suite(.serialized, .enabled(if: HostTest.isRoot, "builds network namespaces: needs root"))
struct HostSetupTests {
    static func prefix(_ s: String) -> IPPrefix { try! IPPrefix(parsing: s) }
    static func address(_ s: String) -> IPAddress { IPAddress(s)! }
    static func interface(_ s: String) -> InterfaceAddress { try! InterfaceAddress(parsing: s) }

    static let layout = SetupLayout(
        bridge: "bridge0", address: Self.interface("10.18.0.1/16"),
        routes: [PeerRoute(peer: address("10.99.0.2"), subnet: prefix("10.17.0.0/16")),
                 PeerRoute(peer: address("10.99.0.3"), subnet: prefix("10.19.0.0/16"))])

    static func mac(of device: String, _ ns: String) throws -> MACAddress {
        let shown = try HostTest.sh("ip", "-n", ns, "-br", "link", "show", device)
        return try #require(shown.split(separator: " ", omittingEmptySubsequences: true).compactMap { MACAddress(String($0)) }.first,
                            "\(shown)")
    }

    @Test func setupOnABareHostThenAgainThenKeepingThenTeardown() throws {
        try HostTest.withDirectory { directory in
            try HostTest.withHost("fhs") { ns in
                let before = try HostTest.snapshot(ns)
                let store = SetupRecordStore(directory: directory, name: "host")
                let setup = HostSetup(store: store)

                let dry = try HostTest.inNamespace(ns) { try setup.planSetup(Self.layout) }
                #expect(try HostTest.snapshot(ns) == before, "planning changes nothing")
                #expect(dry.count == 5, "\(dry)")

                let done = try HostTest.inNamespace(ns) { try setup.setup(Self.layout) }
                #expect(done == dry)
                let link = try HostTest.sh("ip", "-n", ns, "-d", "link", "show", "bridge0")
                #expect(link.contains("bridge") && link.contains(",UP"), "\(link)")
                #expect(try HostTest.sh("ip", "-n", ns, "addr", "show", "dev", "bridge0").contains("inet 10.18.0.1/16"))
                // (linkdown: a bridge made with its MAC given has no carrier until a port joins.)
                let ours = try HostTest.sh("ip", "-n", ns, "route", "show", "proto", "245").replacingOccurrences(of: "linkdown ", with: "")
                #expect(ours == "10.17.0.0/16 dev bridge0 scope link \n10.19.0.0/16 dev bridge0 scope link \n", "\(ours)")
                // The bridge keeps the MAC it was made with when a port with a lower one joins
                // (a restarted ferry's new TAP); left to the kernel, it would take the port's.
                let mac = try Self.mac(of: "bridge0", ns)
                #expect(mac.value & 0x0100_0000_0000 == 0 && mac.value & 0x0200_0000_0000 != 0, "\(mac)")
                try HostTest.sh("ip", "-n", ns, "link", "add", "p0", "address", "02:00:00:00:00:01", "type", "veth", "peer", "p1")
                try HostTest.sh("ip", "-n", ns, "link", "set", "p0", "master", "bridge0", "up")
                #expect(try Self.mac(of: "bridge0", ns) == mac)
                try HostTest.sh("ip", "-n", ns, "link", "del", "p0")

                let again = try HostTest.inNamespace(ns) { try setup.setup(Self.layout) }
                #expect(again == [], "a second set-up changes nothing")
                #expect(try store.load().created.count == 5)

                // Peers come and go at run time; a route the user made by hand is adopted, never removed.
                let keeper = RouteKeeper(layout: Self.layout, store: store)
                try HostTest.sh("ip", "-n", ns, "route", "add", "10.21.0.0/16", "dev", "bridge0")
                try HostTest.inNamespace(ns) { () throws in
                    #expect(try keeper.peerAdded(PeerSpec(address: Self.address("10.99.0.4"), subnet: Self.prefix("10.20.0.0/16"))).count == 1)
                    // In auto mode a peer on u0's network is routed via its address, no tunnel.
                    #expect(try keeper.peerAdded(PeerSpec(address: Self.address("10.99.0.7"), subnet: Self.prefix("10.22.0.0/16")),
                                                 mode: .auto) == [.addRoute(RouteEntry(destination: Self.prefix("10.22.0.0/16"),
                                                                                       device: "u0", gateway: Self.address("10.99.0.7")))])
                    #expect(keeper.installed.contains(RouteEntry(destination: Self.prefix("10.22.0.0/16"), device: "u0",
                                                                 gateway: Self.address("10.99.0.7"))))
                    #expect(try keeper.peerRemoved(PeerSpec(address: Self.address("10.99.0.7"))).count == 1)
                    #expect(try keeper.peerRemoved(address: Self.address("10.99.0.2")) == [
                        .deleteRoute(RouteEntry(destination: Self.prefix("10.17.0.0/16"), device: "bridge0"))])
                    #expect(try keeper.peerAdded(address: Self.address("10.99.0.5"), subnet: Self.prefix("10.21.0.0/16")) == [])
                    #expect(try keeper.peerRemoved(address: Self.address("10.99.0.5")) == [])
                    // A subnet the user routes elsewhere is refused, and nothing changes.
                    #expect(throws: SetupError.self) {
                        try keeper.peerAdded(address: Self.address("10.99.0.6"), subnet: Self.prefix("10.99.0.0/24"))
                    }
                }
                let kept = try HostTest.sh("ip", "-n", ns, "route", "show", "dev", "bridge0")
                #expect(kept.contains("10.19.0.0/16 proto 245") && kept.contains("10.20.0.0/16 proto 245"), "\(kept)")
                #expect(!kept.contains("10.17.0.0/16"), "\(kept)")
                #expect(kept.contains("10.21.0.0/16 scope link") && !kept.contains("10.21.0.0/16 proto 245"), "\(kept)")
                #expect(keeper.current.routes.map(\.subnet) == [Self.prefix("10.19.0.0/16"), Self.prefix("10.20.0.0/16")])
                try HostTest.sh("ip", "-n", ns, "route", "del", "10.21.0.0/16", "dev", "bridge0")

                let undone = try HostTest.inNamespace(ns) { try setup.teardown() }
                #expect(undone.map(\.command) == ["ip route del 10.20.0.0/16 dev bridge0 proto 245",
                                                  "ip route del 10.19.0.0/16 dev bridge0 proto 245", "ip link del bridge0"])
                #expect(try HostTest.snapshot(ns) == before)
                #expect(!FileManager.default.fileExists(atPath: store.path), "the record goes with what it listed")
                #expect(try HostTest.inNamespace(ns) { try setup.teardown() } == [], "a second teardown has nothing to do")
            }
        }
    }

    @Test func anAdoptedBridgeAndTheUsersRoutesOutliveTeardown() throws {
        try HostTest.withDirectory { directory in
            try HostTest.withHost("fha") { ns in
                // The user's bridge, its address, up, with a route of theirs; one of their routes to a peer subnet too.
                try HostTest.sh("ip", "-n", ns, "link", "add", "bridge0", "type", "bridge")
                try HostTest.sh("ip", "-n", ns, "addr", "add", "10.18.0.1/16", "dev", "bridge0")
                try HostTest.sh("ip", "-n", ns, "link", "set", "bridge0", "up")
                try HostTest.sh("ip", "-n", ns, "route", "add", "10.30.0.0/16", "dev", "bridge0")
                try HostTest.sh("ip", "-n", ns, "route", "add", "10.19.0.0/16", "dev", "bridge0")
                let before = try HostTest.snapshot(ns)
                let setup = HostSetup(store: SetupRecordStore(directory: directory, name: "adopt"))
                let done = try HostTest.inNamespace(ns) { try setup.setup(Self.layout) }
                #expect(done == [.addRoute(RouteEntry(destination: Self.prefix("10.17.0.0/16"), device: "bridge0"))])
                let undone = try HostTest.inNamespace(ns) { try setup.teardown() }
                #expect(undone == [.deleteRoute(RouteEntry(destination: Self.prefix("10.17.0.0/16"), device: "bridge0"))])
                let after = try HostTest.snapshot(ns)
                #expect(after == before, "after:\n\(after)\nbefore:\n\(before)")
            }
        }
    }

    /// A step that fails half way: what was made before it is recorded, and teardown removes it.
    @Test func aFailureHalfWayLeavesARecordOfWhatWasMade() throws {
        try HostTest.withDirectory { directory in
            try HostTest.withHost("fhf") { ns in
                let before = try HostTest.snapshot(ns)
                let store = SetupRecordStore(directory: directory, name: "half")
                let setup = HostSetup(store: store)
                var layout = Self.layout
                layout.routes = [PeerRoute(peer: Self.address("10.99.0.2"), subnet: Self.prefix("10.17.0.0/16"),
                                           target: .gateway(Self.address("10.99.0.2"), device: "nosuch0"))]
                let failing = layout
                let failure = try HostTest.inNamespace(ns) { () -> String in
                    do { try setup.setup(failing); return "set up" } catch { return "\(error)" }
                }
                #expect(failure.contains("ip route add 10.17.0.0/16 via 10.99.0.2 dev nosuch0") && failure.contains(store.path),
                        "\(failure)")
                #expect(try store.load().created == [.createBridge("bridge0"), .addAddress(Self.interface("10.18.0.1/16"), device: "bridge0"),
                                                     .setUp("bridge0")])
                #expect(try HostTest.inNamespace(ns) { try setup.teardown() } == [.deleteBridge("bridge0")])
                #expect(try HostTest.snapshot(ns) == before)

                // A damaged record is refused with its path, and nothing is changed.
                try "{not json".write(toFile: store.path, atomically: true, encoding: .utf8)
                #expect(throws: SetupError.self) { try store.load() }
                let refused = try HostTest.inNamespace(ns) { () -> String in
                    do { try setup.teardown(); return "torn down" } catch { return "\(error)" }
                }
                #expect(refused.contains("cannot read the set-up record \(store.path)"), "\(refused)")
            }
        }
    }

    @Test func rtnetlinkReadsWhatIpShows() throws {
        try HostTest.withHost("fhr") { ns in
            try HostTest.sh("ip", "-n", ns, "link", "add", "br9", "type", "bridge")
            try HostTest.sh("ip", "-n", ns, "addr", "add", "fd09::1/64", "dev", "br9", "nodad")
            try HostTest.sh("ip", "-n", ns, "route", "add", "10.50.0.0/16", "via", "10.99.0.2", "proto", "static")
            let state = try HostTest.inNamespace(ns) { try HostState.read() }
            let bridge = try #require(state.link(named: "br9"))
            #expect(bridge.kind == "bridge" && !bridge.isUp)
            #expect(state.link(named: "u0")?.kind == "veth" && state.link(named: "u0")?.isUp == true)
            #expect(state.addresses(of: "u0").contains(.init(interfaceIndex: state.link(named: "u0")!.index,
                                                              address: Self.address("10.99.0.1"), prefixLength: 24)))
            #expect(state.addresses(of: "br9").map(\.description) == ["fd09::1/64"])
            let via = try #require(state.routes(to: Self.prefix("10.50.0.0/16")).first)
            #expect(via.gateway == Self.address("10.99.0.2") && via.routingProtocol == 4 && state.name(of: via.interfaceIndex) == "u0")
            #expect(state.routes(to: Self.prefix("10.99.0.0/24")).first?.routingProtocol == 2, "the connected route is the kernel's")
        }
    }

    @Test func errorsNameTheIpCommandAndTheCause() throws {
        try HostTest.withHost("fhe") { ns in
            let error = try HostTest.inNamespace(ns) { () -> String in
                do {
                    try Rtnetlink.createBridge(named: "u0")
                    return "created"
                } catch {
                    return "\(error)"
                }
            }
            #expect(error.contains("ip link add u0 type bridge") && error.contains("a device named u0 exists already"), "\(error)")
        }
    }
}
