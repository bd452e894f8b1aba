import FerryService
import Foundation
import Testing

@Suite struct DockerDaemonConfigTests {
    static func object(_ data: Data) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// Keys Ferry does not know (nested ones too) survive the merge untouched, and the revert
    /// gives back the original object.
    @Test func mergeKeepsEveryOtherKeyAndRevertRestoresIt() throws {
        let original = Data("""
            {"log-driver": "journald", "mtu": 1500, "registry-mirrors": ["https://m.example"],
             "log-opts": {"tag": "{{.Name}}"}, "live-restore": true}
            """.utf8)
        let (merged, changes) = try DockerDaemonConfig.merge(original, path: "daemon.json", bridge: "bridge0", mtu: 1450)
        let m = try Self.object(merged)
        #expect(m["bridge"] as? String == "bridge0")
        #expect(m["mtu"] as? Int == 1450)
        #expect(m["log-driver"] as? String == "journald")
        #expect(m["registry-mirrors"] as? [String] == ["https://m.example"])
        #expect((m["log-opts"] as? [String: String])?["tag"] == "{{.Name}}")
        #expect(m["live-restore"] as? Bool == true)
        #expect(changes.map(\.key) == ["bridge", "mtu"])
        #expect(changes.first { $0.key == "mtu" }?.previous == "1500")
        #expect(changes.first { $0.key == "bridge" }?.previous == nil)

        let (reverted, kept, empty) = try DockerDaemonConfig.revert(merged, path: "daemon.json", changes: changes)
        #expect(kept.isEmpty && !empty)
        #expect(NSDictionary(dictionary: try Self.object(reverted)) == NSDictionary(dictionary: try Self.object(original)))
    }

    /// A key changed by hand after install is left as it is, and named.
    @Test func revertLeavesAKeyChangedSince() throws {
        let (merged, changes) = try DockerDaemonConfig.merge(nil, path: "daemon.json", bridge: "bridge0", mtu: 1450)
        var edited = try Self.object(merged)
        edited["mtu"] = 1400
        let (reverted, kept, empty) = try DockerDaemonConfig.revert(try JSONSerialization.data(withJSONObject: edited),
                                                                    path: "daemon.json", changes: changes)
        #expect(kept == ["mtu"])
        #expect(!empty)
        let r = try Self.object(reverted)
        #expect(r["bridge"] == nil && r["mtu"] as? Int == 1400)
    }

    /// Values already right are no change; a file Ferry made empties on revert.
    @Test func alreadySetIsNoChangeAndAnEmptyStartEndsEmpty() throws {
        let (_, none) = try DockerDaemonConfig.merge(Data(#"{"bridge":"bridge0","mtu":1450}"#.utf8), path: "d", bridge: "bridge0", mtu: 1450)
        #expect(none.isEmpty)
        let (merged, changes) = try DockerDaemonConfig.merge(Data("  \n".utf8), path: "d", bridge: "b", mtu: 1400)
        let (_, _, empty) = try DockerDaemonConfig.revert(merged, path: "d", changes: changes)
        #expect(empty)
    }

    /// Not JSON, not an object, or `bip` beside `bridge` (which Docker refuses): a clear
    /// refusal that names the file.
    @Test func refusesWhatDockerWouldNotTake() {
        for (text, expected) in [("{\"mtu\": 1500,", "is not valid JSON"), ("[1, 2]", "is not a JSON object"),
                                 // Foundation takes these; Docker (Go's encoding/json) does not.
                                 ("{\"mtu\": 1500,}", "line 1, column 14"), ("{\"a\": [1,]}", "is not valid JSON"),
                                 ("{\"mtu\": 01500}", "is not valid JSON"), ("{\"a\": 1}\n// note", "line 2, column 1: text after"),
                                 (#"{"bip": "172.18.0.1/16"}"#, "sets \"bip\"")] {
            do {
                _ = try DockerDaemonConfig.merge(Data(text.utf8), path: "/etc/docker/daemon.json", bridge: "bridge0", mtu: 1450)
                Issue.record("\(text) was taken")
            } catch {
                #expect(error.description.contains(expected), "\(error)")
                #expect(error.description.contains("/etc/docker/daemon.json"))
                #expect(error.description.contains("nothing was changed"))
            }
        }
    }
}
