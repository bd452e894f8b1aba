import FerryService
import Foundation
import Testing

/// `ferry service install` and `uninstall` under --root, and the unit they write as systemd's
/// own tools judge it: `systemd-analyze verify` (no error) and `security --offline=true` (only
/// the exposures a tunnel daemon cannot do without).
@Suite struct ServiceCommandTests {
    static let config = """
        tap: ferry0
        bridge: bridge0
        local: 10.99.0.1
        peer: [10.99.0.2]
        vni: 42
        underlay-mtu: 1500

        """

    /// The security check's rows that stay exposed, each for a reason of the data plane's:
    /// root (creating the TAP and enslaving it), the host's network (it is what Ferry serves),
    /// the sockets it opens, the capabilities it keeps, /dev/net/tun, no IP allow list (peers
    /// change at run time), and `bpf` among the privileged calls (the TAP's steering program).
    static let acceptedExposures: Set<String> = [
        "SystemCallFilter=~@resources", "SystemCallFilter=~@privileged", "RootDirectory=/RootImage=", "User=/DynamicUser=",
        "PrivateDevices=", "CapabilityBoundingSet=~CAP_BPF", "RestrictAddressFamilies=~AF_PACKET",
        "RestrictAddressFamilies=~AF_NETLINK", "RestrictAddressFamilies=~AF_UNIX", "RestrictAddressFamilies=~AF_(INET|INET6)",
        "CapabilityBoundingSet=~CAP_NET_ADMIN", "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
        "PrivateNetwork=", "PrivateUsers=", "DeviceAllow=", "IPAddressDeny=",
    ]
    /// Becoming `user:` after set-up takes these more.
    static let userExposures: Set<String> = ["CapabilityBoundingSet=~CAP_SET(UID|GID|PCAP)"]

    /// `systemd-analyze ARGS`, in the scratch directory.
    static func analyze(_ s: Scratch, _ arguments: [String]) throws -> ProcessOutput {
        try s.run("/usr/bin/systemd-analyze", arguments)
    }

    /// The installed template as instance `name` (systemd-analyze reads a template only through
    /// an instance), with the instance's drop-in beside it, in a directory of its own.
    static func instance(_ s: Scratch, root: String, name: String) throws -> String {
        let dir = s.file("units-\(name)")
        try FileManager.default.createDirectory(atPath: dir + "/ferry@\(name).service.d", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: root + "/etc/systemd/system/ferry@.service", toPath: dir + "/ferry@\(name).service")
        let dropIn = root + "/etc/systemd/system/ferry@\(name).service.d/user.conf"
        if FileManager.default.fileExists(atPath: dropIn) {
            try FileManager.default.copyItem(atPath: dropIn, toPath: dir + "/ferry@\(name).service.d/user.conf")
        }
        return dir + "/ferry@\(name).service"
    }

    @Test(arguments: [false, true]) func installedUnitPassesVerifyAndSecurity(user: Bool) throws {
        try withScratch { s in
            let root = s.file("root")
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try Data((Self.config + (user ? "user: nobody\n" : "")).utf8).write(to: URL(fileURLWithPath: s.file("hostA.yaml")))
            let ferry = try Tools.ferryPath.get()
            let out = try s.ferrySucceeds(["service", "install", "--config", s.file("hostA.yaml"), "--root", root, "--binary", ferry])
            #expect(out.stdout.contains("systemctl enable ferry@hostA.service"), "\(out)")
            let unit = try String(contentsOfFile: root + "/etc/systemd/system/ferry@.service", encoding: .utf8)
            #expect(unit.contains("ExecStart=\(ferry) run --config /etc/ferry/%i.yaml"))
            #expect(FileManager.default.fileExists(atPath: root + "/etc/systemd/system/ferry@hostA.service.d/user.conf") == user)

            let path = try Self.instance(s, root: root, name: "hostA")
            let verify = try Self.analyze(s, ["verify", path])
            #expect(verify.status == 0 && verify.stderr.isEmpty && verify.stdout.isEmpty, "\(verify)")

            let security = try Self.analyze(s, ["security", "--offline=true", path])
            #expect(security.status == 0, "\(security)")
            let exposed = Set(security.stdout.split(separator: "\n").filter { $0.hasPrefix("✗") }
                .compactMap { $0.dropFirst().split(separator: " ").first.map(String.init) })
            let accepted = user ? Self.acceptedExposures.union(Self.userExposures) : Self.acceptedExposures
            #expect(exposed.subtracting(accepted).isEmpty, "exposed beyond what Ferry needs: \(exposed.subtracting(accepted))")
            let overall = security.stdout.split(separator: "\n").first { $0.contains("Overall exposure level") }
            let figure = try #require(overall.flatMap { $0.split(separator: ":").last?.split(separator: " ").first }.flatMap { Double($0) },
                                      "\(security.stdout.suffix(300))")
            print("[service unit] systemd-analyze security: \(figure) (user: \(user))")
            // 2.5 measured (2.8 with the user drop-in) on systemd 252: what the accepted rows
            // weigh; the bound leaves room for a scoring change, never for another ✗ (above).
            #expect(figure <= 3.0, "\(overall ?? "")")
        }
    }

    /// Through the command: --docker sets the bridge and the MTU the TAP gets on a 1500-byte
    /// underlay (1450 for VXLAN over IPv4), keeping daemon.json's other keys; uninstall leaves
    /// the tree byte for byte as it was; a daemon.json that is not JSON is refused, unchanged.
    @Test func dockerMergeAndUninstallThroughTheCommand() throws {
        try withScratch { s in
            let root = s.file("root")
            try FileManager.default.createDirectory(atPath: root + "/etc/docker", withIntermediateDirectories: true)
            let daemon = "{\n  \"storage-driver\": \"overlay2\",\n  \"mtu\": 1500\n}\n"
            try Data(daemon.utf8).write(to: URL(fileURLWithPath: root + "/etc/docker/daemon.json"))
            try Data(Self.config.utf8).write(to: URL(fileURLWithPath: s.file("lab.yaml")))
            let ferry = try Tools.ferryPath.get()
            try s.ferrySucceeds(["service", "install", "--config", s.file("lab.yaml"), "--name", "hostA", "--root", root,
                                 "--binary", ferry, "--docker"])
            let merged = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: root + "/etc/docker/daemon.json"))) as? [String: Any])
            #expect(merged["bridge"] as? String == "bridge0")
            #expect(merged["mtu"] as? Int == 1450)
            #expect(merged["storage-driver"] as? String == "overlay2")
            let out = try s.ferrySucceeds(["service", "uninstall", "--root", root])
            #expect(out.stdout.contains("removed"), "\(out)")
            #expect(try String(contentsOfFile: root + "/etc/docker/daemon.json", encoding: .utf8) == daemon)
            let left = try FileManager.default.subpathsOfDirectory(atPath: root).sorted()
            #expect(left == ["etc", "etc/docker", "etc/docker/daemon.json"])

            try Data("{\"mtu\": 1500,}".utf8).write(to: URL(fileURLWithPath: root + "/etc/docker/daemon.json"))
            let refused = try s.ferry(["service", "install", "--config", s.file("lab.yaml"), "--root", root, "--binary", ferry, "--docker"])
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("daemon.json is not valid JSON"), "\(refused)")
            #expect(try FileManager.default.subpathsOfDirectory(atPath: root).sorted() == ["etc", "etc/docker", "etc/docker/daemon.json"])
        }
    }

    /// On this host's own / (no --root), where systemd is not PID 1: install says so and prints
    /// the rc.local lines, and uninstall takes it all back. /etc is an overlay in a mount
    /// namespace of the test's own, so the host's /etc is never written.
    @Test(.enabled(if: geteuid() == 0 && !FileManager.default.fileExists(atPath: "/run/systemd/system"),
                   "needs root for a mount namespace, and a host without systemd (it would enable the unit for real)"))
    func withoutSystemdItSaysSoAndPrintsTheRcLocalLines() throws {
        try withScratch { s in
            for d in ["upper", "work"] { try FileManager.default.createDirectory(atPath: s.file(d), withIntermediateDirectories: true) }
            try Data(Self.config.utf8).write(to: URL(fileURLWithPath: s.file("hostA.yaml")))
            let ferry = try Tools.ferryPath.get()
            let script = """
                set -e
                mount -t overlay overlay -o lowerdir=/etc,upperdir=\(s.file("upper")),workdir=\(s.file("work")) /etc
                \(ferry) service install --config \(s.file("hostA.yaml")) --binary \(ferry)
                echo "== installed: $(ls /etc/ferry | tr '\\n' ' ')"
                \(ferry) service uninstall
                echo "== after: $(ls /etc/ferry 2>/dev/null | wc -l) $(ls /etc/systemd/system/ferry@.service 2>/dev/null | wc -l)"
                """
            let out = try s.run("/usr/bin/unshare", ["-m", "--propagation", "private", "sh", "-c", script])
            #expect(out.status == 0, "\(out)")
            #expect(out.stdout.contains("systemd is not running this host (no /run/systemd/system): nothing enabled"), "\(out)")
            #expect(out.stdout.contains("/etc/rc.local"))
            #expect(out.stdout.contains("\(ferry) run --config /etc/ferry/hostA.yaml >>/var/log/ferry-hostA.log 2>&1 &"), "\(out)")
            #expect(out.stdout.contains("== installed: hostA.install.json hostA.yaml"), "\(out)")
            #expect(out.stdout.contains("== after: 0 0"), "\(out)")
            #expect(!FileManager.default.fileExists(atPath: "/etc/ferry/hostA.yaml"))
        }
    }

    /// A config `ferry run` would refuse is refused by install, before anything is written.
    @Test func aConfigThatWouldNotRunIsRefused() throws {
        try withScratch { s in
            let root = s.file("root")
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try Data("tap: ferry0\nvni: 42\n".utf8).write(to: URL(fileURLWithPath: s.file("bad.yaml")))
            let out = try s.ferry(["service", "install", "--config", s.file("bad.yaml"), "--root", root])
            #expect(out.status != 0)
            #expect(out.stderr.contains("would not start ferry run") && out.stderr.contains("--local"), "\(out)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)

            // One that would start, but write where the unit keeps the system read-only: said.
            try Data((Self.config + "capture: /tmp/tunnel.pcap\n").utf8).write(to: URL(fileURLWithPath: s.file("cap.yaml")))
            let warned = try s.ferrySucceeds(["service", "install", "--config", s.file("cap.yaml"), "--root", root,
                                              "--binary", try Tools.ferryPath.get()])
            #expect(warned.stdout.contains("warning: `capture: /tmp/tunnel.pcap` is outside /run/ferry and /var/lib/ferry"), "\(warned)")
        }
    }
}
