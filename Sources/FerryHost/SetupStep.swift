import FerryLinux
import FerryWire

/// A route Ferry installs: a destination onto a device, or via a gateway out of a device.
/// Named by device name, not index, so that a record stays meaningful when a device is
/// made again.
public struct RouteEntry: Hashable, Sendable, Codable, CustomStringConvertible {
    public var destination: IPPrefix
    public var device: String
    public var gateway: IPAddress?

    public init(destination: IPPrefix, device: String, gateway: IPAddress? = nil) {
        self.destination = destination
        self.device = device
        self.gateway = gateway
    }

    /// Whether `route` goes where this entry says (any protocol).
    public func matches(_ route: Rtnetlink.Route, in state: HostState) -> Bool {
        route.destination == destination && route.gateway == gateway && state.name(of: route.interfaceIndex) == device
    }

    public var description: String { "\(destination)" + (gateway.map { " via \($0)" } ?? "") + " dev \(device)" }

    enum CodingKeys: String, CodingKey { case destination, device, gateway }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let text = try c.decode(String.self, forKey: .destination)
        guard let prefix = try? IPPrefix(parsing: text) else {
            throw DecodingError.dataCorruptedError(forKey: .destination, in: c, debugDescription: "'\(text)' is not a prefix")
        }
        destination = prefix
        device = try c.decode(String.self, forKey: .device)
        if let g = try c.decodeIfPresent(String.self, forKey: .gateway) {
            guard let a = IPAddress(g) else {
                throw DecodingError.dataCorruptedError(forKey: .gateway, in: c, debugDescription: "'\(g)' is not an address")
            }
            gateway = a
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(destination.description, forKey: .destination)
        try c.encode(device, forKey: .device)
        try c.encodeIfPresent(gateway?.description, forKey: .gateway)
    }
}

/// One change to the host, as `ip` would make it. Set-up is made of the first four; teardown
/// (and a route that must move) of their inverses.
public enum SetupStep: Hashable, Sendable, CustomStringConvertible {
    case createBridge(String)
    case addAddress(InterfaceAddress, device: String)
    case setUp(String)
    case addRoute(RouteEntry)
    case deleteRoute(RouteEntry)
    case deleteAddress(InterfaceAddress, device: String)
    case setDown(String)
    case deleteBridge(String)

    /// The equivalent `ip` command (what `--dry-run` prints).
    public var command: String {
        switch self {
        case .createBridge(let name): "ip link add \(name) type bridge"
        case .addAddress(let a, let device): "ip addr add \(a) dev \(device)"
        case .setUp(let name): "ip link set \(name) up"
        case .addRoute(let r): Self.routeCommand("add", r)
        case .deleteRoute(let r): Self.routeCommand("del", r)
        case .deleteAddress(let a, let device): "ip addr del \(a) dev \(device)"
        case .setDown(let name): "ip link set \(name) down"
        case .deleteBridge(let name): "ip link del \(name)"
        }
    }

    static func routeCommand(_ verb: String, _ r: RouteEntry) -> String {
        "ip route \(verb) \(r.destination)" + (r.gateway.map { " via \($0)" } ?? "") + " dev \(r.device) proto \(RoutingProtocol.ferry)"
    }

    public var description: String { command }

    /// Whether this step creates something (and so goes in the record).
    public var creates: Bool {
        switch self {
        case .createBridge, .addAddress, .setUp, .addRoute: true
        case .deleteRoute, .deleteAddress, .setDown, .deleteBridge: false
        }
    }

    /// The MAC a bridge Ferry makes is given: random, locally administered, unicast (as Docker
    /// gives docker0 one). Given, the kernel keeps it; left to the kernel, the bridge would take
    /// its lowest port's, and change it when a restarted ferry's new TAP (random MAC) joins,
    /// leaving the containers' gateway ARP entries pointing nowhere (found by the membership
    /// tests: pings to a restarted host failed in 2 of 4 runs).
    static func bridgeAddress() -> MACAddress {
        var random = SystemRandomNumberGenerator()
        return MACAddress(value: random.next() & 0xFEFF_FFFF_FFFF | 0x0200_0000_0000)
    }

    /// Makes the change in the calling thread's namespace.
    public func apply() throws(LinuxError) {
        func index(_ name: String) throws(LinuxError) -> Int32 {
            guard let i = NetworkInterface(name).index else {
                throw LinuxError(command, errno: .noSuchFileOrDirectory, hint: "there is no device named \(name)")
            }
            return i
        }
        switch self {
        case .createBridge(let name): try Rtnetlink.createBridge(named: name, address: Self.bridgeAddress())
        case .addAddress(let a, let device):
            try Rtnetlink.addAddress(.init(interfaceIndex: try index(device), address: a.address, prefixLength: a.length),
                                     name: device)
        case .setUp(let name): try Rtnetlink.setLink(index: try index(name), name: name, up: true)
        case .addRoute(let r): try Rtnetlink.addRoute(try Self.route(r, index: try index(r.device)), name: r.device)
        case .deleteRoute(let r): try Rtnetlink.deleteRoute(try Self.route(r, index: try index(r.device)), name: r.device)
        case .deleteAddress(let a, let device):
            try Rtnetlink.deleteAddress(.init(interfaceIndex: try index(device), address: a.address, prefixLength: a.length),
                                        name: device)
        case .setDown(let name): try Rtnetlink.setLink(index: try index(name), name: name, up: false)
        case .deleteBridge(let name): try Rtnetlink.deleteLink(index: try index(name), name: name)
        }
    }

    static func route(_ r: RouteEntry, index: Int32) throws(LinuxError) -> Rtnetlink.Route {
        Rtnetlink.Route(destination: r.destination, interfaceIndex: index, gateway: r.gateway, routingProtocol: RoutingProtocol.ferry)
    }
}

extension SetupStep: Codable {
    // In the record as {"step": "addRoute", "route": {...}} and the like: readable with jq.
    enum CodingKeys: String, CodingKey { case step, device, address, route }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let step = try c.decode(String.self, forKey: .step)
        func device() throws -> String { try c.decode(String.self, forKey: .device) }
        func address() throws -> InterfaceAddress {
            let text = try c.decode(String.self, forKey: .address)
            guard let a = try? InterfaceAddress(parsing: text) else {
                throw DecodingError.dataCorruptedError(forKey: .address, in: c, debugDescription: "'\(text)' is not ADDRESS/LENGTH")
            }
            return a
        }
        switch step {
        case "createBridge": self = .createBridge(try device())
        case "addAddress": self = .addAddress(try address(), device: try device())
        case "setUp": self = .setUp(try device())
        case "addRoute": self = .addRoute(try c.decode(RouteEntry.self, forKey: .route))
        case "deleteRoute": self = .deleteRoute(try c.decode(RouteEntry.self, forKey: .route))
        case "deleteAddress": self = .deleteAddress(try address(), device: try device())
        case "setDown": self = .setDown(try device())
        case "deleteBridge": self = .deleteBridge(try device())
        default: throw DecodingError.dataCorruptedError(forKey: .step, in: c, debugDescription: "unknown step '\(step)'")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .createBridge(let d): try c.encode("createBridge", forKey: .step); try c.encode(d, forKey: .device)
        case .addAddress(let a, let d):
            try c.encode("addAddress", forKey: .step); try c.encode(a.description, forKey: .address); try c.encode(d, forKey: .device)
        case .setUp(let d): try c.encode("setUp", forKey: .step); try c.encode(d, forKey: .device)
        case .addRoute(let r): try c.encode("addRoute", forKey: .step); try c.encode(r, forKey: .route)
        case .deleteRoute(let r): try c.encode("deleteRoute", forKey: .step); try c.encode(r, forKey: .route)
        case .deleteAddress(let a, let d):
            try c.encode("deleteAddress", forKey: .step); try c.encode(a.description, forKey: .address); try c.encode(d, forKey: .device)
        case .setDown(let d): try c.encode("setDown", forKey: .step); try c.encode(d, forKey: .device)
        case .deleteBridge(let d): try c.encode("deleteBridge", forKey: .step); try c.encode(d, forKey: .device)
        }
    }
}
