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
}
