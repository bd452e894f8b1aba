import CFerryLinux
import FerryLinux
import FerryWire
import Foundation
import Testing

/// The link path's next hops, read from the routing and neighbour tables of two namespaces the
/// test builds (a veth pair, 10.77.0.0/24 and fd77::/64, a route via the other end), and checked
/// against what `ip` shows there.
@Suite(.enabled(if: geteuid() == 0, "builds network namespaces: needs root"))
struct RouteLookupTests {
    let a = "ferryrt\(getpid())a", b = "ferryrt\(getpid())b"
    let near = IPAddress.v4(IPv4Address(10, 77, 0, 1)), far = IPAddress.v4(IPv4Address(10, 77, 0, 2))
    let near6 = IPAddress.v6(IPv6Address("fd77::1")!), far6 = IPAddress.v6(IPv6Address("fd77::2")!)

    @discardableResult
    func sh(_ arguments: String...) throws -> String { try Linux.sh(arguments) }

    func inNamespace<T: Sendable>(_ name: String, _ body: @escaping @Sendable () -> T) throws -> T {
        try Linux.inNamespace(name, body)
    }

    func build() throws {
        try sh("ip", "netns", "add", a)
        try sh("ip", "netns", "add", b)
        try sh("ip", "link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b)
        for (ns, dev, v4, v6) in [(a, "va", "10.77.0.1/24", "fd77::1/64"), (b, "vb", "10.77.0.2/24", "fd77::2/64")] {
            try sh("ip", "-n", ns, "addr", "add", v4, "dev", dev)
            try sh("ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad")
            try sh("ip", "-n", ns, "link", "set", dev, "up")
        }
        try sh("ip", "-n", a, "route", "add", "10.78.0.0/24", "via", "10.77.0.2")
        // A device without Ethernet addresses, as a tun or WireGuard underlay would be.
        try sh("ip", "-n", a, "tuntap", "add", "dev", "t0", "mode", "tun")
        try sh("ip", "-n", a, "addr", "add", "10.80.0.1/24", "dev", "t0")
        try sh("ip", "-n", a, "link", "set", "t0", "up")
    }

    func teardown() {
        _ = try? sh("ip", "netns", "del", a)
        _ = try? sh("ip", "netns", "del", b)
    }

    @Test func nextHopsFollowTheKernelsTables() throws {
        defer { teardown() }
        try build()
        let mac = try #require(MACAddress(try sh("ip", "netns", "exec", b, "cat", "/sys/class/net/vb/address")))
        let index = try #require(Int32(try sh("ip", "netns", "exec", a, "cat", "/sys/class/net/va/ifindex")))
        let (near, far, near6, far6) = (near, far, near6, far6)
        let hop = LinkNextHop(interfaceIndex: index, mac: mac)

        // Before any packet: no neighbour entry; a local address and no route are not links.
        let before = try inNamespace(a) {
            (RouteLookup.nextHop(to: far, from: near), RouteLookup.nextHop(to: near, from: nil),
             RouteLookup.nextHop(to: .v4(IPv4Address(10, 79, 0, 1)), from: near),
             RouteLookup.nextHop(to: .v4(IPv4Address(10, 80, 0, 2)), from: nil))
        }
        #expect(before.0 == .unresolved(nextHop: far))
        if case .notOverEthernet(let why) = before.1 { #expect(why.contains("of this host")) } else { Issue.record("local: \(before.1)") }
        if case .notOverEthernet(let why) = before.2 { #expect(why.contains("no route")) } else { Issue.record("no route: \(before.2)") }
        if case .notOverEthernet(let why) = before.3 { #expect(why.contains("t0 is not Ethernet")) } else { Issue.record("tun: \(before.3)") }

        // The kernel resolves the neighbours when it sends: then each lookup has the MAC.
        try sh("ip", "netns", "exec", a, "ping", "-c", "1", "-W", "2", "10.77.0.2")
        try sh("ip", "netns", "exec", a, "ping", "-6", "-c", "1", "-W", "2", "fd77::2")
        let after = try inNamespace(a) {
            (RouteLookup.nextHop(to: far, from: near), RouteLookup.nextHop(to: .v4(IPv4Address(10, 78, 0, 9)), from: near),
             RouteLookup.nextHop(to: far6, from: near6))
        }
        #expect(after.0 == .resolved(hop, nextHop: far, stale: false))
        #expect(after.1 == .resolved(hop, nextHop: far, stale: false), "through the gateway, the gateway's MAC")
        #expect(after.2 == .resolved(hop, nextHop: far6, stale: false))

        // A stale entry is reported as such, and confirming it has the kernel probe it again.
        try sh("ip", "-n", a, "neigh", "change", "10.77.0.2", "dev", "va", "lladdr", mac.description, "nud", "stale")
        let stale = try inNamespace(a) { RouteLookup.nextHop(to: far, from: near) }
        #expect(stale == .resolved(hop, nextHop: far, stale: true))
        #expect(try inNamespace(a) { RouteLookup.confirm(far, interfaceIndex: index) })
        let state = try sh("ip", "-n", a, "neigh", "show", "10.77.0.2", "dev", "va")
        #expect(!state.contains("STALE") && (state.contains("DELAY") || state.contains("PROBE") || state.contains("REACHABLE")), "\(state)")

        // A neighbour that failed is not a next hop.
        try sh("ip", "-n", a, "neigh", "replace", "10.77.0.2", "dev", "va", "nud", "failed")
        #expect(try inNamespace(a) { RouteLookup.nextHop(to: far, from: near) } == .unresolved(nextHop: far))
    }
}
