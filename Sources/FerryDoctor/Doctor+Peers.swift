import FerryLinux
import FerryWire

extension Doctor {
    /// Each peer reachable on the underlay: a unicast route to it, and an answer to an echo
    /// within a bounded time.
    static func peers(_ plan: DoctorPlan, _ host: HostObservation) -> Finding {
        let name = "peers"
        guard !plan.peers.isEmpty else {
            return .skipped(name, "no peers known: give --config with the peers (peer: addresses) to check that each is reachable")
        }
        var bad: [String] = []
        var fixes: [String] = []
        var good: [String] = []
        var unprobed: [String] = []
        for peer in plan.peers {
            switch host.routes[peer] {
            case nil:
                unprobed.append("\(peer): route not looked up")
                continue
            case .failure(let failure)?:
                if failure.noRoute {
                    bad.append("no route to peer \(peer)")
                    fixes.append("ip route add \(peer) via GATEWAY dev \(underlayInterface(plan, host) ?? "IFACE")   # a route to the peer's underlay network, then: ping -c 3 \(peer)")
                } else {
                    unprobed.append("\(peer): \(failure.reason)")
                }
                continue
            case .success(let route)?:
                guard route.type == "unicast" else {
                    bad.append(route.type == "local" ? "peer \(peer) is an address of this host" : "the route to peer \(peer) is \(route.type)")
                    fixes.append(route.type == "local" ? "give the peer's own underlay address in peer:, not one of this host's (ip -br addr)"
                                 : "ip route del \(route.type) \(peer)   # or whichever route `ip route get \(peer)` shows; then add one by the underlay")
                    continue
                }
                let via = (route.gateway.map { "via \($0) " } ?? "") + "dev \(route.device ?? "?")"
                switch host.echoes[peer] {
                case .answered(let ms)?: good.append("\(peer) answers (\(via), \(ms) ms)")
                case .silent?:
                    bad.append("peer \(peer) (\(via)) did not answer an echo request within the probe's time")
                    fixes.append("check that \(peer) is up and is the peer's underlay address: ping -c 3 \(peer); ip neigh show \(peer) "
                                 + "(a firewall between the hosts may drop ICMP alone: then test the tunnel itself with ferry run and ferry ctl stats)")
                case .failed(let why)?: unprobed.append("\(peer) (\(via)): echo not sent: \(why)")
                case nil: unprobed.append("\(peer) (\(via)): not probed")
                }
            }
        }
        let rest = (good.isEmpty ? [] : [good.joined(separator: "; ")]) + (unprobed.isEmpty ? [] : ["not checked: " + unprobed.joined(separator: "; ")])
        if !bad.isEmpty {
            return .problem(name, (bad + rest).joined(separator: "; "), fix: fixes.joined(separator: "\n"))
        }
        if good.isEmpty { return .skipped(name, unprobed.joined(separator: "; ")) }
        return .ok(name, rest.joined(separator: "; "))
    }
}
