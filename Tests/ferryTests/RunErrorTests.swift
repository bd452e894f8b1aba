import FerryLab
import Foundation
import Testing

/// `ferry run` refuses what cannot work with a message that says what is wrong and what to do,
/// before it touches the system where it can. Tests that need a network run in a namespace of
/// their own.
@Suite(.serialized) struct RunErrorTests {
    static let isRoot = geteuid() == 0

    /// A namespace with 10.99.0.1 on its loopback, removed afterwards.
    func withNamespace<R>(_ name: String, _ body: (String) throws -> R) throws -> R {
        Lab.removeLeftovers(prefix: name)
        let ns = name + "-n"
        _ = try Lab.capture(["ip", "netns", "add", ns])
        defer { Lab.removeLeftovers(prefix: name) }
        _ = try Lab.capture(["ip", "-n", ns, "link", "set", "lo", "up"])
        _ = try Lab.capture(["ip", "-n", ns, "addr", "add", "10.99.0.1/32", "dev", "lo"])
        return try body(ns)
    }

    func ferryIn(_ ns: String, _ scratch: Scratch, _ args: [String]) throws -> ProcessOutput {
        try scratch.run(try Tools.system("ip"), ["netns", "exec", ns, try Tools.ferryPath.get()] + args)
    }

    @Test func flagErrorsSayWhatIsWrong() throws {
        try withScratch { s in
            let cases: [([String], String)] = [
                (["run", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1"], "--tap"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.300", "--vni", "1"], "'10.99.0.300' is not an IPv4 or IPv6 address"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--vni", "1"], "--peer"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "fd00::2", "--vni", "1"], "different IP versions"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.1", "--vni", "1"], "own --local address"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2"], "VXLAN needs a VNI"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--df", "maybe"], "set, unset or inherit"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--key", "1", "--udp-csum"], "VXLAN only"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--gre-path", "link"], "GRE only"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--key", "1", "--gre-path", "fast"], "must be ip or link"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--static-fdb", "02:00:00:00:00:01=10.99.0.9"], "not a --peer"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--capture-point", "inner"], "need --capture"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--offloads", "csum,lro"],
                 "'lro' is not an offload; list some of csum, tso, uso, gso, gro"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--offloads", "tso,gso"],
                 "tso needs csum"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--offloads", "gro,uso"],
                 "uso needs csum"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--key", "1", "--offloads", "csum,tso,gso"],
                 "gso is for VXLAN"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--offloads", "gso", "--no-udp-csum"],
                 "gso needs the outer UDP checksum"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--src-port-range", "4000-5000"],
                 "--dstport 4789 lies inside --src-port-range 4000-5000"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--fdb-size", "16"]
                    + (0..<17).flatMap { ["--static-fdb", String(format: "02:00:00:00:00:%02x=10.99.0.2", $0)] },
                 "17 static forwarding entries, but the table holds 16"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--accept-cidr", "10.99.0.0/16"],
                 "--accept-cidr limits which sources --accept-any-peer learns as peers; add --accept-any-peer"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--accept-any-peer", "--vni", "1", "--accept-cidr", "10.99.0.1/16"],
                 "'10.99.0.1/16' has bits set past its length; write 10.99.0.0/16"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--accept-any-peer", "--vni", "1", "--accept-cidr", "10.99.0.0"],
                 "'10.99.0.0' is not a prefix; write ADDRESS/LENGTH"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--accept-any-peer", "--vni", "1", "--accept-cidr", "fd00:99::/64"],
                 "--accept-cidr fd00:99::/64 and --local 10.99.0.1 are of different IP versions"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--accept-any-peer", "--vni", "1", "--max-macs-per-peer", "0"],
                 "MACs per peer '0' is out of range"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--user", "ferry-no-such-user"],
                 "--user 'ferry-no-such-user': there is no such user on this host"),
                (["run", "--tap", "t0", "--local", "10.99.0.1", "--peer", "10.99.0.2", "--vni", "1", "--user", "root"],
                 "--user 'root' is root (uid 0)"),
            ]
            for (args, message) in cases {
                let r = try s.ferry(args)
                #expect(r.status == 64, "\(args): \(r)")
                #expect(r.stderr.contains(message), "\(args): expected '\(message)' in \(r.stderr)")
            }
        }
    }

    @Test func configFileErrors() throws {
        try withScratch { s in
            let typo = s.file("typo.yaml")
            try "tap: t0\nvnii: 42\nlocal: 10.99.0.1\npeer: [10.99.0.2]\n".write(toFile: typo, atomically: true, encoding: .utf8)
            let r = try s.ferry(["run", "--config", typo])
            #expect(r.status != 0)
            #expect(r.stderr.contains("unknown key 'vnii'") && r.stderr.contains("did you mean 'vni'"), "\(r)")

            let notYAML = s.file("bad.yaml")
            try "tap: [unclosed\n".write(toFile: notYAML, atomically: true, encoding: .utf8)
            let r2 = try s.ferry(["run", "--config", notYAML])
            #expect(r2.status != 0 && r2.stderr.contains("not valid YAML"), "\(r2)")

            let r3 = try s.ferry(["run", "--config", s.file("missing.yaml")])
            #expect(r3.status != 0 && r3.stderr.contains("cannot read config file"), "\(r3)")

            let badBool = s.file("bool.yaml")
            try "tap: t0\nvni: 1\nlocal: 10.99.0.1\npeer: 10.99.0.2\ngre-seq: sometimes\n".write(toFile: badBool, atomically: true, encoding: .utf8)
            let r4 = try s.ferry(["run", "--config", badBool])
            #expect(r4.status != 0 && r4.stderr.contains("'gre-seq' must be true or false"), "\(r4)")

            // A list of offloads may be a YAML sequence.
            let offloads = s.file("offloads.yaml")
            try "tap: t0\nvni: 1\nlocal: 10.99.0.1\npeer: 10.99.0.2\noffloads: [gro, uso]\n".write(toFile: offloads, atomically: true, encoding: .utf8)
            let r5 = try s.ferry(["run", "--config", offloads])
            #expect(r5.status != 0 && r5.stderr.contains("--offloads: uso needs csum"), "\(r5)")

            // accept-cidr is a list in the file, checked as the flag is.
            let prefixes = s.file("prefixes.yaml")
            try "tap: t0\nvni: 1\nlocal: 10.99.0.1\naccept-any-peer: true\naccept-cidr: [10.99.0.0/16, 10.98.1.0/23]\n"
                .write(toFile: prefixes, atomically: true, encoding: .utf8)
            let r6 = try s.ferry(["run", "--config", prefixes])
            #expect(r6.status == 64 && r6.stderr.contains("'10.98.1.0/23' has bits set past its length; write 10.98.0.0/23"), "\(r6)")
        }
    }

    @Test(.enabled(if: isRoot, "needs root for network namespaces"))
    func systemErrorsSayWhatToDo() throws {
        try withScratch { s in
            try withNamespace("ferryre") { ns in
                let base = ["run", "--tap", "t0", "--vni", "1", "--peer", "10.99.0.2", "--stats-interval", "0",
                            "--control", s.file("ctl.sock")]
                // An address this host does not have.
                let notLocal = try ferryIn(ns, s, base + ["--local", "10.99.0.7"])
                #expect(notLocal.status != 0 && notLocal.stderr.contains("not configured on any interface"), "\(notLocal)")

                // A bridge that does not exist.
                let noBridge = try ferryIn(ns, s, base + ["--local", "10.99.0.1", "--bridge", "nosuchbr"])
                #expect(noBridge.status != 0 && noBridge.stderr.contains("no bridge named nosuchbr"), "\(noBridge)")

                // The VXLAN port already taken (here by a UDP socket bound to it).
                let holder = Process()
                holder.executableURL = URL(fileURLWithPath: try Tools.system("ip"))
                holder.arguments = ["netns", "exec", ns, "python3", "-c",
                                    "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.99.0.1',4789)); print('bound', flush=True); time.sleep(30)"]
                let pipe = Pipe()
                holder.standardOutput = pipe
                try holder.run()
                // Killed with everything else in the namespace when it is removed.
                defer { kill(holder.processIdentifier, SIGKILL) }
                _ = pipe.fileHandleForReading.availableData  // "bound": the port is taken
                let inUse = try ferryIn(ns, s, base + ["--local", "10.99.0.1"])
                #expect(inUse.status != 0 && inUse.stderr.contains("already uses it"), "\(inUse)")

                // Not root: no TAP. (setpriv drops to nobody; the address check passes first.)
                let unprivileged = try s.run(try Tools.system("ip"), ["netns", "exec", ns, "setpriv", "--reuid=65534", "--regid=65534",
                                                                      "--clear-groups", try Tools.ferryPath.get()] + base + ["--local", "10.99.0.1", "--control", "/tmp/ferry-unpriv-\(getpid()).sock"])
                #expect(unprivileged.status != 0 && unprivileged.stderr.contains("needs root or CAP_NET_ADMIN"), "\(unprivileged)")
            }
        }
    }
}
