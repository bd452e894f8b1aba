extension Doctor {
    /// br_netfilter hands bridged frames to iptables' FORWARD chain
    /// (`net.bridge.bridge-nf-call-iptables` = 1): every frame between a container and Ferry's
    /// TAP crosses the bridge, so a FORWARD policy of DROP (Docker's default) with no rule
    /// accepting the bridge drops the overlay's traffic.
    static func bridgeNetfilter(_ plan: DoctorPlan, _ host: HostObservation) -> Finding {
        let name = "br_netfilter"
        guard let value = host.sysctls["net.bridge.bridge-nf-call-iptables"] else {
            return .ok(name, "br_netfilter is not loaded (no /proc/sys/net/bridge): bridged frames do not pass through iptables")
        }
        guard value == "1" else { return .ok(name, "net.bridge.bridge-nf-call-iptables=\(value): bridged frames do not pass through iptables") }
        let bridges = bridges(plan, host).filter { host.interface($0) != nil }
        guard !bridges.isEmpty else {
            return .ok(name, "net.bridge.bridge-nf-call-iptables=1, but there is no bridge to check")
        }
        var dropped: [String] = []
        var fixes: [String] = []
        var undecided: [String] = []
        for bridge in bridges {
            let packet = FirewallPacket(ipv6: false, protocolNumber: 6, destinationPort: nil, inInterface: bridge, outInterface: bridge)
            switch firewallVerdict(host, packet, hook: "forward", chain: "FORWARD") {
            case .failure(let unreadable):
                return .skipped(name, "net.bridge.bridge-nf-call-iptables=1, but the FORWARD chain could not be read ("
                                + unreadable.reasons.joined(separator: "; ") + "); check by hand: iptables -S FORWARD")
            case .success((.dropped(let rule, let chain), let tool)):
                dropped.append("frames crossing \(bridge) are dropped by \(tool): \(rule)")
                let hasDockerUser = (host.iptables.text ?? "").contains(":DOCKER-USER") || (host.nftables.text ?? "").contains("\"DOCKER-USER\"")
                let iptablesOwned = tool.hasPrefix("iptables") || chain == "ip filter FORWARD"
                fixes.append(iptablesOwned ? "iptables -I \(hasDockerUser ? "DOCKER-USER" : "FORWARD") -i \(bridge) -o \(bridge) -j ACCEPT"
                                           : "nft insert rule \(chain) iifname \(bridge) oifname \(bridge) accept")
            case .success((.undecided(let rule, let why), let tool)):
                undecided.append("\(bridge): \(tool) rule '\(rule)' uses \(why)")
            case .success: break
            }
        }
        if !dropped.isEmpty {
            return .problem(name, "net.bridge.bridge-nf-call-iptables=1 (br_netfilter): bridged frames pass through the FORWARD chain, and "
                            + dropped.joined(separator: "; "),
                            fix: fixes.joined(separator: "\n")
                                + "\nor, if nothing on this host needs to filter bridged frames: sysctl -w net.bridge.bridge-nf-call-iptables=0")
        }
        if !undecided.isEmpty {
            return .skipped(name, "net.bridge.bridge-nf-call-iptables=1, and whether FORWARD passes bridged frames could not be decided: "
                            + undecided.joined(separator: "; "))
        }
        return .ok(name, "net.bridge.bridge-nf-call-iptables=1, and FORWARD accepts frames crossing \(bridges.joined(separator: ", "))")
    }
}
