import FerryWire

extension Doctor {
    /// What the host's rulesets do with `packet` at `hook` (nftables: "input", "forward") or in
    /// `chain` (iptables: "INPUT", "FORWARD"), and from which tool; or why none could be read.
    /// iptables' filter table is read from iptables-save, in its own syntax (nft shows an
    /// iptables-nft rule's conntrack or other matches only as opaque "xt" expressions), and
    /// every other table from nft; a drop by either is a drop.
    static func firewallVerdict(_ host: HostObservation, _ packet: FirewallPacket, hook: String, chain: String)
        -> Result<(FirewallVerdict, tool: String), FirewallUnreadable> {
        var verdicts: [(FirewallVerdict, String)] = []
        var missing: [String] = []
        let iptables = packet.ipv6 ? host.ip6tables : host.iptables
        let tool = packet.ipv6 ? "ip6tables" : "iptables"
        // With iptables-nft, nft shows iptables' filter table too: leave it to iptables-save.
        let iptablesFilter = !host.iptablesLegacy && (iptables.text?.contains("*filter") ?? false)
        switch host.nftables {
        case .output(let text):
            do {
                let skip: Set<String> = iptablesFilter ? [packet.ipv6 ? "ip6 filter" : "ip filter"] : []
                verdicts.append((try NftablesRuleset(json: text).verdict(for: packet, hook: hook, skipTables: skip), "nft"))
            } catch {
                missing.append(error.description)
            }
        case .unavailable(let why): missing.append("nft: \(why)")
        }
        switch iptables {
        case .output(let text):
            verdicts.append((IptablesRuleset(save: text).verdict(for: packet, chain: chain), tool + (host.iptablesLegacy ? "-legacy" : "")))
        case .unavailable(let why): missing.append("\(tool)-save: \(why)")
        }
        guard !verdicts.isEmpty else { return .failure(FirewallUnreadable(reasons: missing)) }
        if let dropped = verdicts.first(where: { if case .dropped = $0.0 { true } else { false } }) { return .success(dropped) }
        if let undecided = verdicts.first(where: { if case .undecided = $0.0 { true } else { false } }) { return .success(undecided) }
        return .success(verdicts.first { if case .accepted(let rule?) = $0.0 { rule.isEmpty == false } else { false } } ?? verdicts[0])
    }

    /// The command that puts an accepting rule in front of a drop.
    static func acceptRule(tool: String, chain: String, packet: FirewallPacket, match: String, nftMatch: String) -> String {
        if tool == "nft" { return "nft insert rule \(chain) \(nftMatch) accept" }
        let binary = tool.replacingOccurrences(of: "-legacy", with: "")
        return "\(binary) -I \(chain) \(match) -j ACCEPT"
    }

    /// A firewall on the input path closing the tunnel: VXLAN's UDP port or GRE (IP protocol
    /// 47), from each peer to the local address on the underlay interface.
    static func firewall(_ plan: DoctorPlan, _ host: HostObservation) -> Finding {
        let name = "firewall"
        let underlay = underlayInterface(plan, host)
        let vxlan = plan.encapsulation.kind == .vxlan
        let what = vxlan ? "UDP port \(plan.port) (VXLAN)" : "GRE (IP protocol 47)"
        let sources: [IPAddress?] = plan.peers.isEmpty ? [nil] : plan.peers.map { $0 }
        var dropped: [String] = []
        var fixes: [String] = []
        var undecided: [String] = []
        var accepted: [String] = []
        for source in sources {
            let packet = FirewallPacket(ipv6: plan.ipv6Underlay, protocolNumber: vxlan ? 17 : 47, destinationPort: vxlan ? plan.port : nil,
                                        source: source, destination: plan.local, inInterface: underlay)
            let from = source.map { "from \($0)" } ?? "from any peer"
            switch firewallVerdict(host, packet, hook: "input", chain: "INPUT") {
            case .failure(let unreadable):
                return .skipped(name, "could not read the firewall (\(unreadable.reasons.joined(separator: "; "))); check by hand that "
                                + "\(what) is open: iptables -S INPUT; nft list ruleset")
            case .success((.dropped(let rule, let chain), let tool)):
                dropped.append("\(what) \(from) is dropped by \(tool): \(rule)")
                let proto = vxlan ? "-p udp --dport \(plan.port)" : "-p gre"
                let nftProto = vxlan ? "udp dport \(plan.port)" : "meta l4proto gre"
                let family = plan.ipv6Underlay ? "ip6" : "ip"
                fixes.append(acceptRule(tool: tool, chain: chain, packet: packet,
                                        match: (source.map { "-s \($0) " } ?? "") + proto,
                                        nftMatch: (source.map { "\(family) saddr \($0) " } ?? "") + nftProto))
            case .success((.undecided(let rule, let why), let tool)):
                undecided.append("\(from): \(tool) rule '\(rule)' uses \(why), which the doctor does not evaluate")
            case .success((.accepted(let rule), let tool)):
                accepted.append("\(from) accepted by \(tool)" + (rule.map { ": \($0)" } ?? " (no rule drops it)"))
            }
        }
        if !dropped.isEmpty {
            return .problem(name, dropped.joined(separator: "; ") + (undecided.isEmpty ? "" : "; undecided " + undecided.joined(separator: "; ")),
                            fix: Array(Set(fixes)).sorted().joined(separator: "\n"))
        }
        if !undecided.isEmpty {
            return .skipped(name, "could not decide whether \(what) is open: " + undecided.joined(separator: "; "))
        }
        return .ok(name, "\(what) on \(underlay ?? "any interface"): " + accepted.joined(separator: "; "))
    }
}

public struct FirewallUnreadable: Error, Sendable {
    public var reasons: [String]
}
