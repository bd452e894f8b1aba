import FerryLinux
import FerryWire

/// The checks of `ferry doctor`: each a function from the plan and what was observed of the
/// host to one finding, so that a test can plant any host state. `HostReader` observes a live
/// host.
public enum Doctor {
    /// Every check, in the order printed.
    public static func check(_ plan: DoctorPlan, _ host: HostObservation) -> DoctorReport {
        DoctorReport(checks: [
            mtu(plan, host),
            reversePathFilter(plan, host),
            ipForwarding(plan, host),
            bridgeNetfilter(plan, host),
            firewall(plan, host),
            peers(plan, host),
            duplicateAddress(plan, host),
            vxlanChecksumOffload(plan, host),
        ])
    }

    /// The interface the tunnel's packets leave by: the one holding the local address, else
    /// the one the route to the first peer names, else the default route's.
    public static func underlayInterface(_ plan: DoctorPlan, _ host: HostObservation) -> String? {
        if let local = plan.local, let holder = localInterface(local, plan, host) { return holder }
        for peer in plan.peers {
            if case .success(let route)? = host.routes[peer], let device = route.device { return device }
        }
        return host.defaultRouteInterface
    }

    /// The interface that holds `local`; when several do, the one a peer's route leaves by,
    /// else the one with the shortest prefix (a configured network rather than a stray /32).
    public static func localInterface(_ local: IPAddress, _ plan: DoctorPlan, _ host: HostObservation) -> String? {
        let holders = host.holders(of: local).filter { $0.name != "lo" }
        guard holders.count > 1 else { return holders.first?.name }
        for peer in plan.peers {
            if case .success(let route)? = host.routes[peer], let device = route.device, holders.contains(where: { $0.name == device }) {
                return device
            }
        }
        return holders.min { a, b in
            let pa = a.addresses.first { $0.address == local }?.prefixLength ?? 128
            let pb = b.addresses.first { $0.address == local }?.prefixLength ?? 128
            return pa < pb
        }?.name
    }

    /// The bridges to check: the config's, else every bridge on the host.
    static func bridges(_ plan: DoctorPlan, _ host: HostObservation) -> [String] {
        plan.bridge.map { [$0] } ?? host.bridges.map(\.name)
    }

    /// How to persist a sysctl, said once in every fix that sets one.
    static func persist(_ settings: [String]) -> String {
        "to keep it after a reboot: printf '" + settings.map { $0.replacingOccurrences(of: "=", with: " = ") }.joined(separator: "\\n")
            + "\\n' >> /etc/sysctl.d/90-ferry.conf"
    }
}
