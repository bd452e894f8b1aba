import FerrySettings
import FerryWire
import Testing

@Suite struct EtcdSettingsTests {
    static func options(_ body: (inout RunOptions) -> Void) -> RunOptions {
        var o = RunOptions()
        o.tap = "ferry0"
        o.local = "10.99.0.1"
        body(&o)
        return o
    }

    @Test func defaultsAndTheFileKeys() throws {
        let e = try #require(try EtcdSettings(options: Self.options { $0.etcd = "http://10.99.0.100:2379" }, file: nil))
        #expect(e.prefix == "/ferry/network" && e.ttl == 30 && e.subnetFile == "/run/ferry/subnet.env" && !e.tunnelGiven)
        #expect(e.local == IPAddress("10.99.0.1"))
        let file = try ConfigFile(yaml: "etcd: http://a:2379,http://b:2379\netcd-prefix: /x/y\netcd-ttl: 9\nsubnet-file: /tmp/s.env\nvni: 7\n")
        let f = try #require(try EtcdSettings(options: Self.options { _ in }, file: file))
        #expect(f.endpoints == "http://a:2379,http://b:2379" && f.prefix == "/x/y" && f.ttl == 9 && f.subnetFile == "/tmp/s.env")
        #expect(f.tunnelGiven, "a VNI in the file is a tunnel given")
        #expect(try EtcdSettings(options: Self.options { _ in }, file: nil) == nil)
        #expect(!e.runsAsUser)
        #expect(try #require(try EtcdSettings(options: Self.options { $0.etcd = "http://e:2379"; $0.user = "nobody" }, file: nil)).runsAsUser,
                "with --user the join runs in a child process")
        // TLS files and a user, from the file or the flags (a flag wins).
        let secured = try ConfigFile(yaml: "etcd: https://a:2379\netcd-ca: /ca.pem\netcd-cert: /c.pem\netcd-key: /k.pem\n"
                                     + "etcd-user: ferry\netcd-password-file: /pw\n")
        let g = try #require(try EtcdSettings(options: Self.options { $0.etcdUser = "other" }, file: secured))
        #expect(g.access == EtcdAccess(caFile: "/ca.pem", certificateFile: "/c.pem", keyFile: "/k.pem", user: "other",
                                       passwordFile: "/pw"))
    }

    @Test func whatCannotGoWithEtcdIsRefusedSayingWhy() {
        func refusal(_ body: (inout RunOptions) -> Void) -> String {
            do {
                _ = try EtcdSettings(options: Self.options(body), file: nil)
                return ""
            } catch { return error.description }
        }
        #expect(refusal { $0.etcd = "http://e:2379"; $0.peer = ["10.99.0.2"] }.contains("leave out --peer"))
        // Before a join that may wait for etcd: an unknown user is refused at once.
        #expect(refusal { $0.etcd = "http://e:2379"; $0.user = "no-such-user-here" }.contains("no such user"))
        #expect(refusal { $0.etcd = "http://e:2379"; $0.etcdPrefix = "ferry" }.contains("must start with /"))
        #expect(refusal { $0.etcd = "http://e:2379"; $0.etcdTtl = "1" }.contains("TTL"))
        #expect(refusal { $0.etcdTtl = "10" }.contains("give --etcd too"))
        #expect(refusal { $0.etcd = "http://e:2379"; $0.local = nil }.contains("--local"))
    }
}
