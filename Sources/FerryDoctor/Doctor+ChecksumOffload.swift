extension Doctor {
    /// The kernel vxlan device's transmit checksum offload bug. VXLAN packets whose outer UDP
    /// header is NATed again (a MASQUERADE --random-fully rule matching the encapsulated packet,
    /// which keeps the inner packet's mark: kubernetes#92035) leave with a wrong UDP checksum
    /// when the vxlan device has tx-checksum-ip-generic on, and the receiver drops them ("UDP:
    /// bad checksum"). Calico turns the offload off on kernels before 5.7 (felix#2811, for
    /// calico#3145); flannel#1279 documents `ethtool -K flannel.1 tx-checksum-ip-generic off`;
    /// later reports on 5.8 and 5.14 kernels (calico#4865, kubernetes#92035) came with such a
    /// masquerade rule.
    ///
    /// The condition checked: a kernel vxlan device with transmit checksum offload on, and
    /// either a kernel older than 5.7 or a MASQUERADE --random-fully rule in the ruleset.
    /// Ferry's own tunnel is a UDP socket, not a vxlan device: this concerns vxlan devices on
    /// the same host (flannel.1, vxlan.calico, a kernel peer's).
    static func vxlanChecksumOffload(_ plan: DoctorPlan, _ host: HostObservation) -> Finding {
        let name = "vxlan_checksum_offload"
        let vxlans = host.interfaces.filter { $0.kind == "vxlan" }
        guard !vxlans.isEmpty else {
            return .ok(name, "no kernel vxlan device on this host (Ferry's own tunnel is a UDP socket and does not go through one)")
        }
        let version = kernelVersion(host.kernelRelease)
        let old = version.map { $0 < (5, 7) }
        let masquerade = randomFullyMasquerade(host)
        let on = vxlans.filter { $0.transmitChecksum == true }
        let unknown = vxlans.filter { $0.transmitChecksum == nil }
        let kernel = "kernel \(host.kernelRelease.isEmpty ? "(release unknown)" : host.kernelRelease)"
        if !on.isEmpty && (old == true || masquerade != nil) {
            var why: [String] = []
            if old == true { why.append("\(kernel) is older than 5.7, where Calico turns this offload off (felix#2811, calico#3145)") }
            if let masquerade { why.append("a MASQUERADE --random-fully rule (\(masquerade)) can NAT the outer VXLAN packet a second time (kubernetes#92035)") }
            return .problem(name, on.map(\.name).joined(separator: ", ") + " \(on.count == 1 ? "has" : "have") tx-checksum-ip-generic on and "
                            + why.joined(separator: ", and ")
                            + ": VXLAN packets can leave with a bad outer UDP checksum, which the receiver drops (\"UDP: bad checksum\" in its kernel log; flannel#1279)",
                            fix: on.map { "ethtool -K \($0.name) tx-checksum-ip-generic off" }.joined(separator: "\n")
                                + "\nto keep it: a udev rule, e.g. SUBSYSTEM==\"net\", ACTION==\"add\", KERNEL==\"\(on[0].name)\", RUN+=\"/usr/sbin/ethtool -K \(on[0].name) tx-checksum-ip-generic off\"")
        }
        let state = vxlans.map { "\($0.name) tx checksum \($0.transmitChecksum.map { $0 ? "on" : "off" } ?? "unknown")" }.joined(separator: ", ")
        if !unknown.isEmpty && (old == true || masquerade != nil) {
            return .skipped(name, "\(state): the offload state of \(unknown.map(\.name).joined(separator: ", ")) could not be read (ethtool -k)")
        }
        if on.isEmpty { return .ok(name, "\(state): the offload is off") }
        return .ok(name, "\(state) on \(kernel) (5.7 or later) with no MASQUERADE --random-fully rule: the known bug's conditions are not met")
    }

    /// (major, minor) of a release string such as "6.18.44-fc" or "5.4.0-150-generic".
    static func kernelVersion(_ release: String) -> (Int, Int)? {
        let numbers = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        return numbers.count == 2 ? (numbers[0], numbers[1]) : nil
    }

    /// A MASQUERADE rule with --random-fully (iptables) or fully-random (nftables), if any.
    static func randomFullyMasquerade(_ host: HostObservation) -> String? {
        for text in [host.iptables.text, host.ip6tables.text].compactMap({ $0 }) {
            for line in text.split(separator: "\n") where line.contains("MASQUERADE") && line.contains("--random-fully") {
                return String(line)
            }
        }
        if let nft = host.nftables.text, nft.contains("\"masquerade\""), nft.contains("fully-random") {
            return "an nftables masquerade fully-random"
        }
        return nil
    }
}
