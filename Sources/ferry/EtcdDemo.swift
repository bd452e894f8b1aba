import ArgumentParser
import FerryLab
import Foundation

/// `ferry demo --hosts N --etcd`: etcd in the lab, `ferry etcd init`, then the one same command
/// on every host; every container pings every other, and `ferry ctl members` shows the network.
struct EtcdDemo {
    var hosts: Int
    var keep: String?

    func run() throws {
        guard geteuid() == 0 else { throw ToolError("the live demo builds network namespaces and needs root (sudo)") }
        for tool in ["ip", "ping", "etcd", "etcdctl"] where (try? Lab.capture(["which", tool]))?.status != 0 {
            throw ToolError("the etcd demo needs \(tool); install it with tools/setup (iproute2, iputils-ping, etcd-server, etcd-client)")
        }
        let lab = Lab(prefix: "ferrydemo", hosts: hosts)
        let first = lab.hosts[0]
        let etcd = EtcdLab(prefix: "ferrydemo-etcd", members: [(namespace: first.namespace, address: first.underlay)])
        let logs = keep ?? (NSTemporaryDirectory() + "ferry-demo-\(getpid())")
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        let sources = tearDownOnInterrupt {
            lab.teardown()
            etcd.teardown()
        }
        var ferries: [Process] = []
        defer {
            for f in ferries { Lab.stop(f) }
            lab.teardown()
            etcd.teardown()
            sources.forEach { $0.cancel() }
            if keep == nil { try? FileManager.default.removeItem(atPath: logs) }
        }
        print("building the lab: \(hosts) hosts on an underlay bridge (10.99.0.0/24), a container behind bridge0 on each")
        try lab.build()
        try etcd.start()
        let binary = Lab.currentExecutable
        print("etcd running at \(etcd.endpoints) (in host \(first.underlay)'s namespace)")
        let initCommand = [binary, "etcd", "init", "--etcd", etcd.endpoints, "--encap", "vxlan", "--vni", "42"]
        let written = try lab.attempt(first.namespace, initCommand)
        guard written.status == 0 else { throw ToolError("ferry etcd init failed: \(written.stderr)") }
        print("$ ferry etcd init --etcd \(etcd.endpoints) --encap vxlan --vni 42\n  \(written.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
        print("on every host: ferry run --etcd \(etcd.endpoints) --tap ferry0 --bridge bridge0 --local <its address>\n")
        let started = Date()
        for host in lab.hosts {
            ferries.append(try lab.startFerry(binary: binary, on: host, peers: [], tunnel: [],
                                              extra: ["--etcd", etcd.endpoints, "--etcd-ttl", "10",
                                                      "--subnet-file", "\(logs)/subnet-h\(host.index).env"],
                                              log: "\(logs)/ferry-h\(host.index).log"))
        }
        var failed: [String] = []
        for a in lab.hosts {
            for b in lab.hosts where a.index < b.index {
                let from = a.containers[0], to = b.containers[0]
                var ok = false
                for _ in 0..<10 where !ok {
                    ok = (try? lab.attempt(from.namespace, ["ping", "-c", "1", "-W", "1", to.address]))?.status == 0
                }
                print("ping \(from.address) -> \(to.address): \(ok ? "ok" : "FAILED")")
                if !ok { failed.append("\(from.address) -> \(to.address)") }
            }
        }
        print(String(format: "\nevery pair answered %.1f s after the first ferry started\n", Date().timeIntervalSince(started)))
        let members = try lab.attempt(first.namespace, [binary, "ctl", "members", "--control", lab.controlPath(0)])
        print("ferry ctl members on host \(first.underlay):\n\n\(members.stdout)")
        if !failed.isEmpty {
            throw ToolError("no answer: \(failed.joined(separator: ", ")); logs in \(logs) (run with --keep DIR to keep them)")
        }
        print("demo complete; the lab is torn down" + (keep.map { ", logs kept in \($0)" } ?? ""))
    }
}
