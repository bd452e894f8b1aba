import FerryLinux

extension Doctor {
    /// Strict reverse path filtering (rp_filter 1, the larger of `all` and the interface's
    /// value) on the underlay or a bridge drops every packet whose source the host would not
    /// route back out of the interface it came in by: tunnel packets from a peer reached by
    /// another route, routed container traffic on asymmetric paths.
    static func reversePathFilter(_ plan: DoctorPlan, _ host: HostObservation) -> Finding {
        let name = "rp_filter"
        let underlay = underlayInterface(plan, host)
        var interfaces: [(String, String)] = []
        if let underlay { interfaces.append((underlay, "the underlay")) }
        for bridge in bridges(plan, host) where bridge != underlay && host.interface(bridge) != nil {
            interfaces.append((bridge, "a container bridge"))
        }
        guard !interfaces.isEmpty else { return .skipped(name, "no underlay interface and no bridge known to check") }
        guard let allText = host.sysctls["net.ipv4.conf.all.rp_filter"], let all = Int(allText) else {
            return .skipped(name, "net.ipv4.conf.all.rp_filter could not be read (/proc/sys/net/ipv4/conf/all/rp_filter)")
        }
        var strict: [(String, String, Int)] = []
        var values: [String] = ["all=\(all)"]
        for (interface, role) in interfaces {
            let own = Int(host.sysctls["net.ipv4.conf.\(interface).rp_filter"] ?? "0") ?? 0
            values.append("\(interface)=\(own)")
            if max(all, own) == 1 { strict.append((interface, role, own)) }
        }
        let valueText = "net.ipv4.conf.{" + values.joined(separator: ", ") + "}.rp_filter"
        guard !strict.isEmpty else {
            return .ok(name, "\(valueText): no strict filtering on \(interfaces.map(\.0).joined(separator: ", ")) (the kernel uses the larger of all and the interface's value; 2, loose, is safe)")
        }
        // Evidence: peers whose route back leaves by another interface are dropped now.
        var evidence: [String] = []
        if let underlay, strict.contains(where: { $0.0 == underlay }) {
            for peer in plan.peers {
                if case .success(let route)? = host.routes[peer], let device = route.device, device != underlay {
                    evidence.append("the route back to peer \(peer) leaves by \(device), not \(underlay): its tunnel packets are dropped now")
                }
            }
            if evidence.isEmpty && !plan.peers.isEmpty {
                evidence.append("every peer's route leaves by \(underlay) today, so nothing is dropped until a route changes")
            }
        }
        var settings: [String] = []
        if all == 1 { settings.append("net.ipv4.conf.all.rp_filter=2") }
        settings += strict.filter { $0.2 == 1 }.map { "net.ipv4.conf.\($0.0).rp_filter=2" }
        let detail = "\(valueText): strict on " + strict.map { "\($0.0) (\($0.1))" }.joined(separator: ", ")
            + ", which drops tunnel or routed packets whose source the host would route back out of another interface"
            + (evidence.isEmpty ? "" : "; " + evidence.joined(separator: "; "))
        return .problem(name, detail, fix: "sysctl -w " + settings.joined(separator: " ") + "\n" + persist(settings))
    }
}
