import FerryWire

extension Doctor {
    /// The local address held twice: on two interfaces of this host, or by another host on the
    /// underlay (it answers ARP for it; for IPv6 the kernel's own duplicate address detection
    /// failed). Peers then send to whichever answers.
    static func duplicateAddress(_ plan: DoctorPlan, _ host: HostObservation) -> Finding {
        let name = "duplicate_address"
        var problems: [String] = []
        var fixes: [String] = []
        var notes: [String] = []
        let candidates: [IPAddress]
        if let local = plan.local {
            candidates = [local]
        } else {
            // Without a config: every address of this host that is not loopback or link-local.
            candidates = Array(Set(host.interfaces.filter { $0.name != "lo" }.flatMap { $0.addresses.map(\.address) }
                .filter { !$0.isLinkLocalOrLoopback })).sorted()
            notes.append("no local address known (no --config): checked this host's own addresses, not the network")
        }
        for address in candidates {
            var holders = host.holders(of: address).filter { $0.name != "lo" }
            // The one to keep first: the interface the tunnel uses.
            if let keep = localInterface(address, plan, host), let i = holders.firstIndex(where: { $0.name == keep }) {
                holders.insert(holders.remove(at: i), at: 0)
            }
            if holders.count > 1 {
                problems.append("\(address) is on \(holders.count) interfaces: \(holders.map(\.name).joined(separator: ", "))")
                for other in holders.dropFirst() {
                    let length = other.addresses.first { $0.address == address }?.prefixLength ?? (address.isIPv6 ? 128 : 32)
                    fixes.append("ip addr del \(address)/\(length) dev \(other.name)   # keep it only on \(holders[0].name)")
                }
            }
            for holder in holders {
                if let entry = holder.addresses.first(where: { $0.address == address }), entry.dadFailed {
                    problems.append("\(address) on \(holder.name) failed the kernel's duplicate address detection (dadfailed): another host uses it")
                    fixes.append("find the other host (ip -6 neigh show \(address)) and give one of them another address; then ip addr del \(address)/\(entry.prefixLength) dev \(holder.name) && ip addr add \(address)/\(entry.prefixLength) dev \(holder.name)")
                }
            }
        }
        if let local = plan.local {
            if host.holders(of: local).isEmpty {
                notes.append("\(local) is not an address of this host (ip -br addr); ferry run would refuse it")
            }
            switch host.arp {
            case .answered(let interface, let others) where !others.isEmpty:
                problems.append("another host answers ARP for \(local) on \(interface): " + others.map(\.description).joined(separator: ", "))
                fixes.append("give one of the hosts another address; to see who answers: arping -D -c 2 -I \(interface) \(local); ip neigh")
            case .answered(let interface, _):
                notes.append("no other host answered an ARP probe for \(local) on \(interface)")
            case .notRun(let why):
                notes.append(local.isIPv6 ? "IPv6: the kernel's duplicate address detection result is what is checked" : "ARP probe not run: \(why)")
            }
        }
        if !problems.isEmpty {
            return .problem(name, (problems + notes).joined(separator: "; "), fix: fixes.joined(separator: "\n"))
        }
        let checked = candidates.isEmpty ? "no address to check" : "\(candidates.count == 1 ? candidates[0].description : "\(candidates.count) addresses") held once"
        return .ok(name, ([checked] + notes).joined(separator: "; "))
    }
}

extension IPAddress {
    var isLinkLocalOrLoopback: Bool {
        switch self {
        case .v4(let a): a.value >> 24 == 127 || a.value >> 16 == 0xA9FE
        case .v6(let a): a.high >> 54 == 0x3FA || (a.high == 0 && a.low == 1)
        }
    }
}
