import FerryLinux
import FerryWire

/// The host's links, addresses and routes at one moment: what a plan is computed from. Read
/// from rtnetlink by `read()`, or built by hand in tests.
public struct HostState: Equatable, Sendable {
    public var links: [Rtnetlink.Link]
    public var addresses: [Rtnetlink.Address]
    /// The main table's routes.
    public var routes: [Rtnetlink.Route]

    public init(links: [Rtnetlink.Link], addresses: [Rtnetlink.Address], routes: [Rtnetlink.Route]) {
        self.links = links
        self.addresses = addresses
        self.routes = routes
    }

    /// The calling thread's namespace, now.
    public static func read() throws(LinuxError) -> HostState {
        HostState(links: try Rtnetlink.links(), addresses: try Rtnetlink.addresses(), routes: try Rtnetlink.routes())
    }

    public func link(named name: String) -> Rtnetlink.Link? { links.first { $0.name == name } }
    public func link(index: Int32) -> Rtnetlink.Link? { links.first { $0.index == index } }
    public func name(of index: Int32?) -> String { index.flatMap { link(index: $0)?.name } ?? "?" }

    public func addresses(of name: String) -> [Rtnetlink.Address] {
        guard let index = link(named: name)?.index else { return [] }
        return addresses.filter { $0.interfaceIndex == index }
    }

    /// The unicast routes of the main table to exactly `prefix`.
    public func routes(to prefix: IPPrefix) -> [Rtnetlink.Route] {
        routes.filter { $0.destination == prefix && $0.isUnicast }
    }

    /// Whether the main table has Ferry's route `entry` (its protocol, device and gateway).
    public func has(_ entry: RouteEntry) -> Bool {
        routes(to: entry.destination).contains { entry.matches($0, in: self) && $0.routingProtocol == RoutingProtocol.ferry }
    }
}
