import FerryLinux
import FerryWire
import Foundation

/// Observes the live host (in the calling process's network namespace) for a plan: files under
/// /proc and /sys, getifaddrs, rtnetlink, `nft` and `iptables-save`, and the probes of
/// `HostProbes` (an echo to each peer, an ARP probe for the local address).
public struct HostReader {
    /// Where /proc and /sys are (a test may point them at a planted tree).
    public var proc = "/proc"
    public var sys = "/sys"
    /// How long a probe waits for an answer, per attempt.
    public var probeTimeout: Double = 1

    public init() {}

    public func observe(_ plan: DoctorPlan) -> HostObservation {
        var host = HostObservation()
        host.kernelRelease = read("\(proc)/sys/kernel/osrelease") ?? ""
        host.interfaces = interfaces()
        host.defaultRouteInterface = defaultRouteInterface()
        // Sysctl names by path: an interface name may hold a dot (flannel.1).
        var sysctls: [(String, String)] = [("net.ipv4.ip_forward", "net/ipv4/ip_forward"),
                                           ("net.ipv4.conf.all.rp_filter", "net/ipv4/conf/all/rp_filter"),
                                           ("net.bridge.bridge-nf-call-iptables", "net/bridge/bridge-nf-call-iptables")]
        sysctls += host.interfaces.map { ("net.ipv4.conf.\($0.name).rp_filter", "net/ipv4/conf/\($0.name)/rp_filter") }
        for (key, path) in sysctls {
            if let value = read("\(proc)/sys/\(path)") { host.sysctls[key] = value }
        }
        host.docker = docker(plan.dockerDaemonConfig)
        host.nftables = Self.run(["nft", "-j", "list", "ruleset"])
        host.iptables = Self.run(["iptables-save"])
        if plan.ipv6Underlay { host.ip6tables = Self.run(["ip6tables-save"]) }
        host.iptablesLegacy = host.iptables.text?.contains("(legacy)") ?? false
        for peer in plan.peers {
            let route = RouteLookup.route(to: peer)
            host.routes[peer] = route
            if case .success(let r) = route, r.type == "unicast" {
                host.echoes[peer] = HostProbes.echo(peer, attempts: 2, timeout: probeTimeout)
            }
        }
        if let local = plan.local {
            if case .v4(let v4) = local, let holder = Doctor.localInterface(local, plan, host) {
                do {
                    host.arp = .answered(interface: holder, others: try HostProbes.arpDuplicates(of: v4, on: holder, timeout: probeTimeout))
                } catch {
                    host.arp = .notRun(error.description)
                }
            } else if !local.isIPv6 {
                host.arp = .notRun("\(local) is on no interface of this host")
            } else {
                host.arp = .notRun("IPv6 has no ARP")
            }
        }
        return host
    }

    func read(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func interfaces() -> [HostObservation.Interface] {
        let base = "\(sys)/class/net"
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).sorted()
        let addresses = HostProbes.interfaceAddresses()
        let failedDAD = dadFailed()
        return names.map { name in
            let dir = "\(base)/\(name)"
            var kind = read("\(dir)/uevent")?.split(separator: "\n").first { $0.hasPrefix("DEVTYPE=") }.map { String($0.dropFirst(8)) }
            if kind == nil, FileManager.default.fileExists(atPath: "\(dir)/bridge") { kind = "bridge" }
            let master = (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(dir)/master")).map { ($0 as NSString).lastPathComponent }
            var interface = HostObservation.Interface(
                name: name, mtu: Int(read("\(dir)/mtu") ?? "") ?? 0, kind: kind, master: master,
                addresses: addresses.filter { $0.interface == name }.map {
                    HostObservation.Address($0.address, prefixLength: $0.prefixLength, dadFailed: failedDAD.contains("\(name) \($0.address)"))
                })
            if kind == "vxlan" { interface.transmitChecksum = HostProbes.transmitChecksumOffload(name) }
            return interface
        }
    }

    /// "IFACE ADDRESS" of every IPv6 address whose duplicate address detection failed
    /// (/proc/net/if_inet6: address, index, prefix length, scope, flags, name; IFA_F_DADFAILED 0x08).
    func dadFailed() -> Set<String> {
        var result = Set<String>()
        for line in (read("\(proc)/net/if_inet6") ?? "").split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 6, f[0].count == 32, let flags = UInt32(f[4], radix: 16), flags & 0x08 != 0 else { continue }
            let hex = Array(f[0])
            let groups = stride(from: 0, to: 32, by: 4).map { String(hex[$0..<$0 + 4]) }.joined(separator: ":")
            if let address = IPAddress(groups) { result.insert("\(f[5]) \(address)") }
        }
        return result
    }

    /// The interface of the IPv4 default route (/proc/net/route: destination 00000000, mask 0).
    func defaultRouteInterface() -> String? {
        for line in (read("\(proc)/net/route") ?? "").split(separator: "\n").dropFirst() {
            let f = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            if f.count >= 8, f[1] == "00000000", f[7] == "00000000" { return String(f[0]) }
        }
        return nil
    }

    func docker(_ path: String) -> HostObservation.DockerConfig {
        guard FileManager.default.fileExists(atPath: path) else { return .absent }
        guard let data = FileManager.default.contents(atPath: path) else { return .unreadable("not readable") }
        guard let object = try? JSONSerialization.jsonObject(with: data), let map = object as? [String: Any] else {
            return .unreadable("not a JSON object")
        }
        guard let mtu = map["mtu"] else { return .mtu(nil) }
        guard let n = mtu as? NSNumber else { return .unreadable("\"mtu\" is not a number") }
        return .mtu(n.intValue)
    }

    /// Runs a tool found in the usual directories, bounded to 10 seconds; its standard output,
    /// or why there is none.
    static func run(_ command: [String]) -> HostObservation.ToolOutput {
        let candidates = ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"].map { "\($0)/\(command[0])" }
        guard let path = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return .unavailable("\(command[0]) is not installed")
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-doctor-\(UUID().uuidString)")
        let errors = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-doctor-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: output)
            try? FileManager.default.removeItem(at: errors)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = Array(command.dropFirst())
        guard let out = try? FileHandle(forWritingTo: output), let err = try? FileHandle(forWritingTo: errors) else {
            return .unavailable("no temporary file for \(command[0])'s output")
        }
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { return .unavailable("\(path) did not start: \(error)") }
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
            return .unavailable("\(command.joined(separator: " ")) did not finish within 10 s")
        }
        try? out.close()
        try? err.close()
        let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        guard process.terminationStatus == 0 else {
            let message = ((try? String(contentsOf: errors, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            return .unavailable("\(command.joined(separator: " ")) exited \(process.terminationStatus)" + (message.isEmpty ? "" : ": \(message)"))
        }
        return .output(text)
    }
}
