import FerryLinux
import FerryWire

/// Why a host cannot be set up as asked: what is in the way and what to do about it.
public struct SetupError: Error, Equatable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The steps that take a host from its state to a layout, and back: pure functions of the
/// state read now, the layout, and the record of what Ferry made before. Computing them apart
/// from applying them is what makes `--dry-run` exact and a second run a no-op.
public enum SetupPlan {
    /// What `setup` must change. Adopts what is already as asked (a bridge, its address, a
    /// route the same as Ferry's); refuses, changing nothing, what is in the way (a device of
    /// that name that is no bridge, the address on another device, a route to a peer subnet
    /// made by someone else that goes elsewhere). A route of Ferry's that goes elsewhere now,
    /// or that the record holds for a subnet the layout no longer names, is removed.
    public static func setup(_ layout: SetupLayout, state: HostState, record: SetupRecord = SetupRecord())
        throws(SetupError) -> [SetupStep] {
        var steps: [SetupStep] = []
        let bridge = layout.bridge
        guard !bridge.isEmpty, bridge.utf8.count < 16, !bridge.contains("/"), !bridge.contains(where: \.isWhitespace) else {
            throw SetupError("'\(bridge)' is not a device name: 1 to 15 characters, no '/' or spaces (e.g. bridge0)")
        }
        let existing = state.link(named: bridge)
        if let existing {
            guard existing.kind == "bridge" else {
                throw SetupError("\(bridge) exists and is \(existing.kind.map { "a \($0) device" } ?? "a plain device"), not a bridge: "
                                 + "name another bridge (--bridge, `bridge:`) or remove it (ip link del \(bridge))")
            }
        } else {
            steps.append(.createBridge(bridge))
        }

        if let address = layout.address {
            let mine = state.addresses(of: bridge)
            if !mine.contains(where: { $0.address == address.address && $0.prefixLength == address.length }) {
                if let same = mine.first(where: { $0.address == address.address }) {
                    throw SetupError("\(bridge) has \(same) already, not \(address): change `subnet` to \(same) or remove it "
                                     + "(ip addr del \(same) dev \(bridge))")
                }
                if let other = state.addresses.first(where: { $0.address == address.address }) {
                    throw SetupError("\(address.address) is an address of \(state.name(of: other.interfaceIndex)) already: give the "
                                     + "bridge another address (`subnet`), or remove it (ip addr del \(other) dev "
                                     + "\(state.name(of: other.interfaceIndex)))")
                }
                steps.append(.addAddress(address, device: bridge))
            }
        }
        if existing?.isUp != true { steps.append(.setUp(bridge)) }

        // Routes: one per peer subnet.
        var wanted: [IPPrefix: RouteEntry] = [:]
        var owner: [IPPrefix: IPAddress] = [:]
        for route in layout.routes {
            if let local = layout.address?.prefix, overlaps(local, route.subnet) {
                throw SetupError("peer \(route.peer)'s subnet \(route.subnet) overlaps this host's \(local): each host needs a "
                                 + "container subnet of its own")
            }
            let entry: RouteEntry
            switch route.target {
            case .bridge: entry = RouteEntry(destination: route.subnet, device: bridge)
            case .gateway(let g, let device): entry = RouteEntry(destination: route.subnet, device: device, gateway: g)
            }
            if let other = owner[route.subnet], other != route.peer {
                throw SetupError("peers \(other) and \(route.peer) both have the subnet \(route.subnet): give each peer its own")
            }
            owner[route.subnet] = route.peer
            wanted[route.subnet] = entry
        }
        for route in layout.routes {
            guard let entry = wanted.removeValue(forKey: route.subnet) else { continue }
            let present = state.routes(to: entry.destination)
            if present.contains(where: { entry.matches($0, in: state) }) { continue }
            for r in present {
                guard r.routingProtocol == RoutingProtocol.ferry else {
                    throw SetupError("the main table has a route to \(entry.destination) already (\(describe(r, in: state))) that "
                                     + "Ferry did not make: remove it (ip route del \(entry.destination)) or leave that "
                                     + "subnet out of the peers")
                }
                steps.append(.deleteRoute(RouteEntry(destination: r.destination, device: state.name(of: r.interfaceIndex),
                                                     gateway: r.gateway)))
            }
            steps.append(.addRoute(entry))
        }
        // Ferry's routes to subnets no longer asked for.
        let asked = Set(layout.routes.map(\.subnet))
        for case .addRoute(let old) in record.created where !asked.contains(old.destination) && state.has(old) {
            steps.append(.deleteRoute(old))
        }
        return steps
    }

    /// What `teardown` must change: the inverse of each thing the record says Ferry made, that is
    /// still there and still Ferry's, newest first. A route goes only if it still carries
    /// Ferry's protocol; an address or the up state of a bridge Ferry made goes with the bridge.
    public static func teardown(_ record: SetupRecord, state: HostState) -> [SetupStep] {
        let createdBridges = Set(record.created.compactMap { if case .createBridge(let n) = $0 { n } else { nil } })
        var steps: [SetupStep] = []
        for step in record.created.reversed() {
            switch step {
            case .addRoute(let r) where state.has(r):
                steps.append(.deleteRoute(r))
            case .addAddress(let a, let device) where !createdBridges.contains(device):
                if state.addresses(of: device).contains(where: { $0.address == a.address && $0.prefixLength == a.length }) {
                    steps.append(.deleteAddress(a, device: device))
                }
            case .setUp(let device) where !createdBridges.contains(device):
                if state.link(named: device)?.isUp == true { steps.append(.setDown(device)) }
            case .createBridge(let name):
                if state.link(named: name)?.kind == "bridge" { steps.append(.deleteBridge(name)) }
            default:
                break
            }
        }
        return steps
    }

    static func overlaps(_ a: IPPrefix, _ b: IPPrefix) -> Bool { a.contains(b.address) || b.contains(a.address) }

    static func describe(_ r: Rtnetlink.Route, in state: HostState) -> String {
        (r.gateway.map { "via \($0) " } ?? "") + "dev \(state.name(of: r.interfaceIndex)) proto \(r.routingProtocol)"
    }
}
