import FerryWire

extension Doctor {
    /// A container MTU (the bridge's, its ports', Docker's `mtu`) larger than the tunnel
    /// carries: the underlay MTU less the outer headers and the inner Ethernet header. Such
    /// packets are dropped or answered with "too big" at the tunnel, and TCP stalls where path
    /// MTU discovery is blocked.
    static func mtu(_ plan: DoctorPlan, _ host: HostObservation) -> Finding {
        let name = "mtu"
        let underlay = underlayInterface(plan, host)
        guard let underlayMTU = plan.underlayMTU ?? underlay.flatMap({ host.interface($0)?.mtu }) else {
            return .skipped(name, "no underlay interface known (no interface holds the local address, no route to a peer, no default route), "
                            + "so the tunnel's MTU is unknown; give underlay-mtu: in the config")
        }
        let limit = plan.containerMTULimit(underlayMTU: underlayMTU)
        let basis = "\(limit) bytes, what the tunnel carries (underlay MTU \(underlayMTU)"
            + (plan.underlayMTU != nil ? " from the config" : " on \(underlay ?? "?")")
            + " less \(plan.tunnelIPOverhead) bytes of \(plan.tunnelName) and \(Ethernet.headerLength) of inner Ethernet)"
        var over: [(String, Int)] = []
        var seen: [String] = []
        var notes: [String] = []
        for bridge in bridges(plan, host) {
            guard let b = host.interface(bridge) else {
                notes.append("bridge \(bridge) does not exist (yet)")
                continue
            }
            seen.append(bridge)
            if b.mtu > limit { over.append((bridge, b.mtu)) }
            for port in host.ports(of: bridge) {
                seen.append(port.name)
                if port.mtu > limit { over.append((port.name, port.mtu)) }
            }
        }
        var dockerOver: Int?
        switch host.docker {
        case .absent: break
        case .mtu(let m?):
            seen.append("daemon.json mtu \(m)")
            if m > limit { dockerOver = m }
        case .mtu(nil): notes.append("\(plan.dockerDaemonConfig) sets no mtu (Docker then uses 1500 for its containers)")
        case .unreadable(let why): notes.append("\(plan.dockerDaemonConfig) could not be read: \(why)")
        }
        let noteText = notes.isEmpty ? "" : "; " + notes.joined(separator: "; ")
        if over.isEmpty && dockerOver == nil {
            guard !seen.isEmpty else {
                return .skipped(name, "no bridge to check (none on this host, or the config's does not exist)" + noteText + "; the tunnel carries " + basis)
            }
            return .ok(name, "\(seen.joined(separator: ", ")) within \(basis)" + noteText)
        }
        var problems = over.map { "\($0.0) has MTU \($0.1)" }
        var fixes = over.map { "ip link set dev \($0.0) mtu \(limit)" }
        if let dockerOver {
            problems.append("\(plan.dockerDaemonConfig) sets mtu \(dockerOver)")
            fixes.append("set \"mtu\": \(limit) in \(plan.dockerDaemonConfig), then: systemctl restart docker")
        }
        let fix = fixes.joined(separator: "\n")
            + "\n(and the containers' own interfaces: Docker takes daemon.json's mtu, or a network's com.docker.network.driver.mtu)"
            + (underlay.map { "\nor raise the underlay's MTU instead: ip link set dev \($0) mtu \(max(over.map(\.1).max() ?? 0, dockerOver ?? 0) + plan.tunnelIPOverhead + Ethernet.headerLength)" } ?? "")
        return .problem(name, "\(problems.joined(separator: ", ")): above \(basis)" + noteText, fix: fix)
    }
}
