import FerryLab
import Foundation
import Testing

/// What `ferry run --etcd` and `ferry etcd init` refuse before they touch etcd, and what they say.
@Suite struct EtcdCommandTests {
    @Test func runWithEtcdRefusesPeersAndABadPrefix() throws {
        try withScratch { s in
            let run = ["run", "--tap", "ft-etcd0", "--local", "10.99.0.1", "--etcd", "http://127.0.0.1:1"]
            let peers = try s.ferry(run + ["--peer", "10.99.0.2"])
            #expect(peers.status == CLIErrorTests.usageError && peers.stderr.contains("leave out --peer"), "\(peers)")
            let prefix = try s.ferry(run + ["--etcd-prefix", "ferry"])
            #expect(prefix.status == CLIErrorTests.usageError && prefix.stderr.contains("must start with /"), "\(prefix)")
            let ttl = try s.ferry(["run", "--tap", "ft-etcd0", "--local", "10.99.0.1", "--vni", "1", "--etcd-ttl", "5"])
            #expect(ttl.status == CLIErrorTests.usageError && ttl.stderr.contains("give --etcd too"), "\(ttl)")
        }
    }

    @Test func etcdInitChecksTheConfigItWouldWrite() throws {
        try withScratch { s in
            let base = ["etcd", "init", "--etcd", "http://127.0.0.1:1"]
            let noVNI = try s.ferry(base + ["--encap", "vxlan"])
            #expect(noVNI.status == CLIErrorTests.usageError && noVNI.stderr.contains("give --vni N"), "\(noVNI)")
            let range = try s.ferry(base + ["--vni", "42", "--network", "10.16.0.0/12", "--subnet-length", "8"])
            #expect(range.status == CLIErrorTests.usageError && range.stderr.contains("subnetLength 8 must be longer"), "\(range)")
            let option = try s.ferry(base + ["--vni", "42", "--option", "workers=4"])
            #expect(option.status == CLIErrorTests.usageError && option.stderr.contains("'workers' is not one a host takes"), "\(option)")
        }
    }

    @Test func etcdAccessOptionsAreCheckedBeforeEtcdIsTouched() throws {
        try withScratch { s in
            let run = try s.ferry(["run", "--tap", "ft-etcd0", "--local", "10.99.0.1", "--vni", "1", "--etcd-user", "ferry"])
            #expect(run.status == CLIErrorTests.usageError && run.stderr.contains("give --etcd too"), "\(run)")
            let base = ["etcd", "init", "--etcd", "https://127.0.0.1:1", "--vni", "42"]
            let half = try s.ferry(base + ["--etcd-cert", "/etc/hostname"])
            #expect(half.status != 0 && half.stderr.contains("give both --etcd-cert and --etcd-key"), "\(half)")
            let noFile = try s.ferry(base + ["--etcd-user", "ferry", "--etcd-password-file", s.file("none")])
            #expect(noFile.status != 0 && noFile.stderr.contains("cannot read --etcd-password-file"), "\(noFile)")
            let plain = try s.ferry(["etcd", "init", "--etcd", "http://127.0.0.1:1", "--vni", "42", "--etcd-ca", "/etc/hostname"])
            #expect(plain.status != 0 && plain.stderr.contains("no endpoint is https"), "\(plain)")
        }
    }

    /// `--etcd-ca/--etcd-cert/--etcd-key` and `--etcd-user/--etcd-password-file` reach a real
    /// etcd that asks for them (each on its own: TLS with client certificates, then users).
    @Test(.enabled(if: getuid() == 0, "starts etcd")) func etcdInitReachesEtcdOverTLSAndAsAUser() throws {
        try withScratch { s in
            let directory = "/dev/shm/ferry-etcd-fc21-certs"
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let certificates = try EtcdLab.makeCertificates(in: directory, addresses: ["127.77.21.1"])
            let tls = EtcdLab(prefix: "fc21", members: [(nil, "127.77.21.1")], clientPort: 32379, peerPort: 32380,
                              tls: EtcdLab.TLS(caFile: certificates.caFile, certificateFile: certificates.serverCertificateFile,
                                               keyFile: certificates.serverKeyFile, clientCertificateRequired: true))
            defer { tls.teardown() }
            try tls.start()
            let over = ["etcd", "init", "--etcd", tls.endpoints, "--vni", "42", "--etcd-ca", certificates.caFile]
            let written = try s.ferry(over + ["--etcd-cert", certificates.clientCertificateFile, "--etcd-key", certificates.clientKeyFile])
            #expect(written.status == 0 && written.stdout.contains(": written: "), "\(written)")
            let refused = try s.ferry(over)
            #expect(refused.status != 0 && refused.stderr.contains("BAD_CERTIFICATE"), "\(refused)")

            let users = EtcdLab(prefix: "fc22", members: [(nil, "127.77.22.1")], clientPort: 32379, peerPort: 32380)
            defer { users.teardown() }
            try users.start()
            for command in [["user", "add", "root:rootpw"], ["user", "grant-role", "root", "root"], ["user", "add", "ferry:ferrypw"],
                            ["role", "add", "ferry"], ["role", "grant-permission", "ferry", "--prefix=true", "readwrite", "/ferry/"],
                            ["user", "grant-role", "ferry", "ferry"], ["auth", "enable"]] {
                _ = try users.etcdctlChecked(command)
            }
            try "ferrypw\n".write(toFile: s.file("password"), atomically: true, encoding: .utf8)
            try "wrong\n".write(toFile: s.file("wrong"), atomically: true, encoding: .utf8)
            let asUser = ["etcd", "init", "--etcd", users.endpoints, "--vni", "42", "--etcd-user", "ferry"]
            let ok = try s.ferry(asUser + ["--etcd-password-file", s.file("password")])
            #expect(ok.status == 0 && ok.stdout.contains(": written: "), "\(ok)")
            let wrong = try s.ferry(asUser + ["--etcd-password-file", s.file("wrong")])
            #expect(wrong.status != 0 && wrong.stderr.contains("authenticating as ferry"), "\(wrong)")
        }
    }
}
