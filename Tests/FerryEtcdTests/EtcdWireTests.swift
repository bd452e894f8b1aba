// The gateway's stream cut into messages however the chunks fall, prefix ranges, and the
// reading of `--etcd` URLs (each bad one refused with what to write instead).

@testable import FerryEtcd
import Foundation
import Testing

@Suite("Etcd wire and configuration")
struct EtcdWireTests {
    @Test("a stream of JSON messages is split the same whatever the chunk boundaries, braces in strings included")
    func splitter() throws {
        let messages = [
            #"{"result":{"created":true,"header":{"revision":"5"}}}"#,
            #"{"result":{"events":[{"kv":{"key":"e30=","value":"IntcIn0i"}}],"note":"a } and a \" and a \\"}}"#,
            #"{"error":{"grpc_code":14,"message":"{not json}"}}"#,
        ]
        let stream = Array((messages[0] + "\n" + messages[1] + messages[2] + "\r\n").utf8)
        for size in [1, 2, 3, 7, 13, 64, stream.count] {
            var splitter = JSONObjectSplitter()
            var out: [String] = []
            var i = 0
            while i < stream.count {
                let chunk = stream[i..<min(i + size, stream.count)]
                out += try splitter.feed(chunk).map { String(decoding: $0, as: UTF8.self) }
                i += size
            }
            #expect(out == messages, "chunks of \(size)")
            #expect(splitter.pending == 0)
        }
    }

    @Test("bytes outside a message, or a message past the limit, are refused")
    func splitterGarbage() throws {
        var splitter = JSONObjectSplitter()
        #expect(throws: JSONObjectSplitter.Garbage.self) { try splitter.feed(Array(#"{"a":1} x{"#.utf8)) }
        var small = JSONObjectSplitter(limit: 16)
        #expect(throws: JSONObjectSplitter.Garbage.self) { try small.feed(Array(#"{"a":"0123456789abcdefgh"#.utf8)) }
    }

    @Test("a prefix's range ends just past every key that starts with it")
    func rangeEnd() {
        #expect(Wire.rangeEnd(prefix: "/ferry/") == Array("/ferry0".utf8))
        #expect(Wire.rangeEnd(prefix: "a") == Array("b".utf8))
        #expect(Wire.rangeEnd(prefix: "") == [0])
        #expect(Wire.rangeEnd(prefix: "a\u{7f}") == [0x61, 0x80])
        // A last byte of 0xff is dropped and the one before incremented.
        let withFF = String(decoding: [0x61, 0xc3, 0xbf], as: UTF8.self)  // "aÿ": 0xc3 0xbf
        #expect(Wire.rangeEnd(prefix: withFF) == [0x61, 0xc3, 0xc0])
    }

    @Test("64-bit integers are read from the gateway's strings, and from numbers")
    func int64() throws {
        let reply = try Wire.decode(WireLeaseResponse.self, Array(#"{"ID":"7668682688105967629","TTL":5}"#.utf8))
        #expect(reply.ID?.value == 7668682688105967629)
        #expect(reply.TTL?.value == 5)
        #expect(throws: EtcdError.self) { try Wire.decode(WireLeaseResponse.self, Array(#"{"ID":"x"}"#.utf8)) }
    }

    @Test("--etcd URLs: hosts, IPv6 in brackets, the default port, https")
    func endpoints() throws {
        let list = try EtcdClient.Endpoint.parseList("http://10.0.0.1:2379,https://[fd00::1]:4001, http://etcd.example")
        #expect(list == [EtcdClient.Endpoint(tls: false, host: "10.0.0.1", port: 2379),
                         EtcdClient.Endpoint(tls: true, host: "fd00::1", port: 4001),
                         EtcdClient.Endpoint(tls: false, host: "etcd.example", port: 2379)])
        #expect(list[1].url == "https://[fd00::1]:4001")
        #expect(try EtcdClient.Endpoint(parsing: "http://10.0.0.1:2379/").url == "http://10.0.0.1:2379")
    }

    @Test("a bad --etcd URL says what is wrong and what to write", arguments: [
        ("10.0.0.1:2379", "write http://10.0.0.1:2379"),
        ("grpc://10.0.0.1:2379", "must be http or https"),
        ("http://10.0.0.1:2379/v3/kv", "give the member's URL alone (http://10.0.0.1:2379)"),
        ("http://fd00::1:2379", "IPv6 address goes in brackets"),
        ("http://[fd00::1:2379", "closing ]"),
        ("http://10.0.0.1:99999", "from 1 to 65535"),
        ("http://10.0.0.1:x", "from 1 to 65535"),
        ("http://:2379", "names no host"),
        ("http://root:pw@10.0.0.1:2379", "--etcd-user and --etcd-password-file"),
        ("http://a:1,,http://b:1", "separate the URLs with single commas"),
        ("", "no etcd URL given"),
        ("http://a:1,http://a:1", "listed twice"),
    ])
    func badEndpoints(text: String, says: String) {
        #expect {
            try EtcdClient.Endpoint.parseList(text)
        } throws: { error in
            (error as? EtcdClient.ConfigurationError)?.description.contains(says) == true
        }
    }

    @Test("inconsistent TLS and authentication settings are refused before any request")
    func validation() throws {
        let https = try EtcdClient.Endpoint.parseList("https://10.0.0.1:2379")
        let http = try EtcdClient.Endpoint.parseList("http://10.0.0.1:2379")
        func says(_ c: EtcdClient.Configuration, _ text: String) -> Bool {
            do { try c.validate(); return false } catch { return error.description.contains(text) }
        }
        #expect(says(.init(endpoints: https, certificateFile: "/etc/hostname"), "give both --etcd-cert and --etcd-key"))
        #expect(says(.init(endpoints: http, user: "root"), "both a user and a password"))
        #expect(says(.init(endpoints: http, caFile: "/etc/hostname"), "no endpoint is https"))
        #expect(says(.init(endpoints: https, caFile: "/nonexistent/ca.pem"), "cannot read /nonexistent/ca.pem"))
        #expect(says(.init(endpoints: []), "no etcd endpoint"))
        try EtcdClient.Configuration(endpoints: https, caFile: "/etc/hostname").validate()
        // The CA is read when the client is made (while `ferry run --user` is still root), and
        // one with no certificate in it is refused there, not at the first handshake.
        #expect {
            _ = try EtcdClient(configuration: .init(endpoints: https, caFile: "/etc/hostname"))
        } throws: { error in
            let text = "\(error)"
            return text.contains("/etc/hostname") && (text.contains("holds no certificate") || text.contains("cannot load the CA"))
        }
    }
}
