extension Doctor {
    /// IPv4 forwarding: without it the host does not route between its container bridge and
    /// the rest (containers' traffic to other hosts' subnets, the static-route mode).
    static func ipForwarding(_ plan: DoctorPlan, _ host: HostObservation) -> Finding {
        let name = "ip_forward"
        guard let value = host.sysctls["net.ipv4.ip_forward"] else {
            return .skipped(name, "net.ipv4.ip_forward could not be read (/proc/sys/net/ipv4/ip_forward)")
        }
        guard value == "0" else { return .ok(name, "net.ipv4.ip_forward=\(value)") }
        let setting = ["net.ipv4.ip_forward=1"]
        return .problem(name, "net.ipv4.ip_forward=0: the host does not route, so containers cannot reach other hosts' container subnets "
                        + "(nor anything off their bridge)", fix: "sysctl -w net.ipv4.ip_forward=1\n" + persist(setting))
    }
}
