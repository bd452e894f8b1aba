import FerryLinux
import FerryWire

/// What the doctor saw of a host: everything the checks decide on, read once by `HostReader`
/// (or planted by a test). Nothing here is read again by a check.
public struct HostObservation: Sendable {
    public struct Address: Equatable, Sendable {
        public var address: IPAddress
        public var prefixLength: Int
        /// IPv6 only: the kernel's own duplicate address detection failed (IFA_F_DADFAILED).
        public var dadFailed: Bool
        public init(_ address: IPAddress, prefixLength: Int, dadFailed: Bool = false) {
            self.address = address
            self.prefixLength = prefixLength
            self.dadFailed = dadFailed
        }
    }

    public struct Interface: Equatable, Sendable {
        public var name: String
        public var mtu: Int
        /// "bridge", "vxlan", "veth", "tun", … (DEVTYPE in sysfs); nil for a plain device.
        public var kind: String?
        /// The bridge this interface is a port of.
        public var master: String?
        public var addresses: [Address]
        /// Transmit checksum offload (read for vxlan devices only).
        public var transmitChecksum: Bool?

        public init(name: String, mtu: Int, kind: String? = nil, master: String? = nil, addresses: [Address] = [],
                    transmitChecksum: Bool? = nil) {
            self.name = name
            self.mtu = mtu
            self.kind = kind
            self.master = master
            self.addresses = addresses
            self.transmitChecksum = transmitChecksum
        }
    }

    /// A tool's output, or why there is none.
    public enum ToolOutput: Equatable, Sendable {
        case output(String)
        case unavailable(String)

        public var text: String? { if case .output(let t) = self { t } else { nil } }
    }

    /// Docker's daemon.json as far as the doctor cares.
    public enum DockerConfig: Equatable, Sendable {
        case absent
        case mtu(Int?)
        case unreadable(String)
    }

    public enum ARPProbe: Equatable, Sendable {
        /// Who else answered for the address on the interface.
        case answered(interface: String, others: [MACAddress])
        case notRun(String)
    }

    public var kernelRelease: String = ""
    /// Sysctls by dotted name (`net.ipv4.ip_forward`); a missing key is a missing file.
    public var sysctls: [String: String] = [:]
    public var interfaces: [Interface] = []
    /// The interface of the default route, if there is one.
    public var defaultRouteInterface: String?
    public var docker: DockerConfig = .absent
    /// `nft -j list ruleset`.
    public var nftables: ToolOutput = .unavailable("not read")
    /// `iptables-save` (or `ip6tables-save` for an IPv6 underlay), with whether it is the
    /// legacy (x_tables) variant, whose rules nft does not show.
    public var iptables: ToolOutput = .unavailable("not read")
    public var ip6tables: ToolOutput = .unavailable("not read")
    public var iptablesLegacy: Bool = false
    public var routes: [IPAddress: Result<RouteAnswer, RouteLookupFailure>] = [:]
    public var echoes: [IPAddress: EchoOutcome] = [:]
    public var arp: ARPProbe = .notRun("no local address to probe")

    public init() {}

    public func interface(_ name: String) -> Interface? { interfaces.first { $0.name == name } }

    /// The interfaces holding `address`.
    public func holders(of address: IPAddress) -> [Interface] {
        interfaces.filter { $0.addresses.contains { $0.address == address } }
    }

    public var bridges: [Interface] { interfaces.filter { $0.kind == "bridge" } }

    public func ports(of bridge: String) -> [Interface] { interfaces.filter { $0.master == bridge } }
}
