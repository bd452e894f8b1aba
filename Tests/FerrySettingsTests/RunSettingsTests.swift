import FerryEngine
import FerryWire
import Foundation
import Testing
@testable import FerrySettings

@Suite struct RunSettingsTests {
    func settings(_ yaml: String, _ edit: (inout RunOptions) -> Void = { _ in }) throws(SettingsError) -> RunSettings {
        var o = RunOptions()
        edit(&o)
        return try RunSettings(options: o, file: try ConfigFile(yaml: yaml))
    }

    @Test func theFileFillsWhatTheCommandLineLeaves() throws {
        let s = try settings("""
            tap: t0
            local: 10.99.0.1
            vni: 42
            peer: [10.99.0.2=10.17.0.0/16, 10.99.0.3]
            bridge: bridge0
            subnet: 10.18.0.1/16
            ageing: 60
            metrics: 127.0.0.1:9469
            """) { $0.ageing = "30" }
        #expect(s.engine.peers == [IPAddress("10.99.0.2")!, IPAddress("10.99.0.3")!])
        #expect(s.layout.peers.first?.subnet?.description == "10.17.0.0/16")
        #expect(s.device.bridge == "bridge0" && s.layout.bridge == "bridge0")
        #expect(s.engine.ageingSeconds == 30, "the flag wins over the file")
        #expect(s.metrics == Endpoint(address: IPAddress("127.0.0.1")!, port: 9469))
        #expect(s.control == "/run/ferry/t0.sock")
        if case .vxlan(let vni) = s.engine.encapsulation { #expect(vni == 42) } else { Issue.record("not vxlan") }
    }

    @Test func missingEssentialsSayWhereToGiveThem() {
        #expect(throws: SettingsError("give the TAP device with --tap NAME (or `tap:` in the config file)")) {
            try settings("local: 10.99.0.1\nvni: 1")
        }
        #expect(throws: SettingsError("give this host's underlay address with --local IP (or `local:` in the config file)")) {
            try settings("tap: t0\nvni: 1")
        }
    }

    @Test func metricsEndpointsParseOrSayTheForm() throws {
        #expect(try Parse.endpoint("[::1]:9469", "--metrics") == Endpoint(address: IPAddress("::1")!, port: 9469))
        #expect(try Parse.endpoint("0.0.0.0:80", "--metrics").description == "0.0.0.0:80")
        #expect(Endpoint(address: IPAddress("fd00::1")!, port: 1).description == "[fd00::1]:1")
        for (text, message) in [("9469", "is not ADDRESS:PORT"), ("::1:9469", "is not ADDRESS:PORT"),
                                ("localhost:9469", "'localhost' is not an IPv4 or IPv6 address"),
                                ("127.0.0.1:0", "--metrics port '0' is out of range"), ("127.0.0.1:", "is not a number")] {
            do {
                _ = try Parse.endpoint(text, "--metrics")
                Issue.record("\(text) accepted")
            } catch {
                #expect(error.description.contains(message), "\(text): \(error)")
            }
        }
    }

    @Test func configFilesAreCheckedKeyByKey() {
        func refusal(_ yaml: String) -> String {
            do { _ = try ConfigFile(yaml: yaml, origin: "f.yaml"); return "accepted" } catch { return error.description }
        }
        #expect(refusal("vnii: 4") == "config file f.yaml: unknown key 'vnii'; did you mean 'vni'? (keys are the long option names of ferry run)")
        #expect(refusal("tap: [unclosed").hasPrefix("config file f.yaml is not valid YAML"))
        #expect(refusal("- a\n- b").contains("must be a mapping of option names to values"))
        // Found by FuzzConfig: a key that is a list or a mapping trapped inside Yams.load.
        #expect(refusal("[c]:") == "config file f.yaml: a key must be a name (e.g. `vni:`), not a list or a mapping")
        #expect(refusal("{a: 1}: 2").contains("a key must be a name"))
        #expect(refusal("peer: [{[a]: 1}]").contains("a key must be a name"))
        #expect(refusal("") == "accepted")
        #expect(refusal("# only a comment\n") == "accepted")
        #expect(ConfigFile.distance("", "abc") == 3 && ConfigFile.distance("kitten", "sitting") == 3)
    }

    /// Found by FuzzConfig: YAML 1.1's base-60 integers overflowed inside Yams (a trap) when a
    /// value such as `200888888888888888:8:16` was read. Integers are read by Ferry now; one
    /// that does not fit stays text, which the setting then refuses in words.
    @Test func yamlIntegersAreReadWithoutTrapping() throws {
        func value(_ yaml: String) throws -> Any? { try ConfigFile(yaml: "vni: \(yaml)", origin: "f.yaml")["vni"] }
        #expect(try value("42") as? Int == 42)
        #expect(try value("0x2a") as? Int == 42)
        #expect(try value("0o52") as? Int == 42 && value("052") as? Int == 42 && value("0b101010") as? Int == 42)
        #expect(try value("1_000") as? Int == 1000 && value("-7") as? Int == -7 && value("1:30") as? Int == 90)
        #expect(try value("true") as? Bool == true && value("~") is NSNull && value("4.5") as? String == "4.5")
        #expect(try value("200888888888888888:8:16") as? String == "200888888888888888:8:16")
        #expect(try value("99999999999999999999") as? String == "99999999999999999999")
        let file = try ConfigFile(yaml: "vni :\n1peer: [2-.5.0.2=l.org,200888888888888888:8:16,tcgtr/17]\n".replacingOccurrences(of: "1peer", with: "peer"),
                                  origin: "f.yaml")
        var options = RunOptions()
        options.tap = "t0"
        options.local = "10.99.0.1"
        #expect(throws: SettingsError.self) { try RunSettings(options: options, file: file) }
        #expect(throws: SettingsError.self) { try RunSettings(options: options, file: ConfigFile(yaml: "vni: 200888888888888888:8:16")) }
    }

    @Test func anUnreadableFileIsSaidSo() {
        #expect(throws: SettingsError("cannot read config file /nonexistent/ferry.yaml: no such file or not readable")) {
            try ConfigFile.load(path: "/nonexistent/ferry.yaml")
        }
    }
}
