import FerryCapture
import Foundation
import Testing

/// What the tool says, and with which exit code, when it is given something it cannot use; and
/// that `--filter` really selects frames.
@Suite struct CLIErrorTests {
    /// ArgumentParser's exit code for a usage or validation error (EX_USAGE).
    static let usageError: Int32 = 64

    static let tunnel = ["--vni", "42", "--local", "10.99.0.1", "--remote", "10.99.0.2"]

    // MARK: - Files

    /// Each command that reads a capture, with the capture as its one argument to substitute.
    static func commands(reading input: String, writing output: String) -> [[String]] {
        [
            ["pcap", "encap"] + tunnel + [input, output],
            ["pcap", "decap", input, output],
            ["pcap", "inspect", input],
            ["pcap", "inspect", "--json", input],
        ]
    }

    /// `ferry ctl` takes the socket from --control or --tap (/run/ferry/TAP.sock), not both, and
    /// says which socket it found nobody on.
    @Test func ctlSaysWhichSocket() throws {
        try withScratch { s in
            let both = try s.ferry(["ctl", "--tap", "x0", "--control", s.file("c.sock"), "stats"])
            #expect(both.status != 0 && both.stderr.contains("--control PATH or --tap NAME, not both"), "\(both)")
            let tap = "nosuch\(getpid() % 100_000)"
            let none = try s.ferry(["ctl", "--tap", tap, "stats"])
            #expect(none.status != 0 && none.stderr.contains("/run/ferry/\(tap).sock") && none.stderr.contains("no ferry is running"),
                    "\(none)")
        }
    }

    @Test func missingInputFileIsNamed() throws {
        try withScratch { s in
            let missing = s.file("no-such-capture.pcap"), output = s.file("out.pcap")
            for command in Self.commands(reading: missing, writing: output) {
                let result = try s.ferry(command)
                let what = command.joined(separator: " ")
                #expect(result.status != 0, "\(what): \(result)")
                #expect(result.stderr.contains(missing), "\(what): the message should name the file: \(result)")
                #expect(result.stderr.lowercased().contains("no such"), "\(what): \(result)")
                #expect(!result.stderr.contains("Usage:"), "a missing file is not a usage error: \(result)")
                #expect(!FileManager.default.fileExists(atPath: output), "\(what) left an output file behind")
            }
        }
    }

    @Test func fileThatIsNotACaptureIsRefused() throws {
        try withScratch { s in
            let junk = s.file("junk.pcap")
            try Data("this is not a capture\n".utf8).write(to: URL(fileURLWithPath: junk))
            for command in Self.commands(reading: junk, writing: s.file("out.pcap")) {
                let result = try s.ferry(command)
                #expect(result.status != 0, "\(command): \(result)")
                #expect(result.stderr.contains(junk), "\(command): \(result)")
            }
        }
    }

    @Test(arguments: [("LINUX_SLL", LinkType.linuxCooked), ("RAW", LinkType.rawIP)])
    func captureThatIsNotEthernetIsRefused(_ name: String, _ linkType: LinkType) throws {
        try withScratch { s in
            let path = s.file("\(name).pcap")
            let writer = try PcapFileWriter(path: path, linkType: linkType)
            writer.write([UInt8](repeating: 0x45, count: 40), timestamp: PacketTimestamp(seconds: 1_767_225_600, microseconds: 0))
            try writer.close()
            for command in Self.commands(reading: path, writing: s.file("out.pcap")) {
                let result = try s.ferry(command)
                #expect(result.status != 0, "\(command): \(result)")
                #expect(result.stderr.contains(path), "\(command): \(result)")
                #expect(result.stderr.lowercased().contains("not ethernet"), "\(command): \(result)")
                #expect(result.stderr.contains(name), "\(command): the message should name the link type: \(result)")
            }
        }
    }

    @Test func unwritableOutputIsAClearError() throws {
        try withScratch { s in
            let sample = try s.sample()
            let encapsulated = s.file("encapsulated.pcap")
            try s.ferrySucceeds(["pcap", "encap"] + Self.tunnel + [sample, encapsulated])
            // Root may write anywhere, but not below a missing directory or a plain file.
            let plainFile = s.file("plain")
            try Data().write(to: URL(fileURLWithPath: plainFile))
            for output in [s.file("missing-directory/out.pcap"), plainFile + "/out.pcap"] {
                for command in [["pcap", "encap"] + Self.tunnel + [sample, output], ["pcap", "decap", encapsulated, output],
                                ["pcap", "sample", output]] {
                    let result = try s.ferry(command)
                    #expect(result.status != 0, "\(command): \(result)")
                    #expect(result.stderr.contains(output), "\(command): the message should name \(output): \(result)")
                    #expect(result.stderr.lowercased().contains("cannot write") || result.stderr.lowercased().contains("not writable"),
                            "\(command): \(result)")
                }
            }
        }
    }

    // MARK: - Filters

    @Test func badFilterExpressionIsNamed() throws {
        try withScratch { s in
            let sample = try s.sample()
            let output = s.file("out.pcap")
            let filter = ["--filter", "udp port"]
            for command in [["pcap", "encap"] + filter + Self.tunnel + [sample, output], ["pcap", "decap"] + filter + [sample, output],
                            ["pcap", "inspect"] + filter + [sample]] {
                let result = try s.ferry(command)
                #expect(result.status != 0, "\(command): \(result)")
                #expect(result.stderr.contains("\"udp port\"") || result.stderr.contains("'udp port'"),
                        "\(command): the message should quote the expression: \(result)")
                #expect(result.stderr.lowercased().contains("filter"), "\(command): \(result)")
                #expect(!FileManager.default.fileExists(atPath: output), "\(command) left an output file behind")
            }
        }
    }

    /// `--filter icmp` keeps the frames tcpdump keeps with the same expression, and only those.
    @Test func filterSelectsFramesForEncap() throws {
        try withScratch { s in
            let sample = try s.sample()
            let expected = s.file("icmp-by-tcpdump.pcap")
            try s.tcpdumpFilter(sample, "icmp", into: expected)
            let kept = try frames(expected)
            let all = try frames(sample)
            #expect(!kept.isEmpty && kept.count < all.count, "the sample should hold ICMP and other frames")

            let encapsulated = s.file("encapsulated.pcap"), output = s.file("decapsulated.pcap")
            let encap = try s.ferrySucceeds(["pcap", "encap", "--filter", "icmp"] + Self.tunnel + [sample, encapsulated])
            #expect(encap.stdout.contains("\(all.count - kept.count)"), "the skipped frames should be counted: \(encap.stdout)")
            try s.ferrySucceeds(["pcap", "decap", encapsulated, output])
            expectSameFrames(try frames(output), kept, "encap --filter icmp")
            let rows = try s.tshark(encapsulated, fields: ["icmp.type"])
            #expect(rows.count == kept.count && rows.allSatisfy { !$0.all("icmp.type").isEmpty })
        }
    }

    /// On outer frames: `--filter "udp port 4789"` takes the VXLAN frames of a mixed capture and
    /// leaves the GRE ones, which count as filtered out, not dropped.
    @Test func filterSelectsFramesForDecapAndInspect() throws {
        try withScratch { s in
            let sample = try s.sample()
            let inner = try frames(sample)
            let vxlan = s.file("vxlan.pcap"), gre = s.file("gre.pcap"), mixed = s.file("mixed.pcap")
            try s.ferrySucceeds(["pcap", "encap"] + Self.tunnel + [sample, vxlan])
            try s.ferrySucceeds(["pcap", "encap", "--key", "9", "--local", "10.99.0.1", "--remote", "10.99.0.2", sample, gre])
            try writeCapture(try frames(gre) + frames(vxlan), to: mixed)

            let output = s.file("decapsulated.pcap")
            let decap = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--json", "--filter", "udp port 4789", mixed, output]).stdout)
            #expect(int(decap, "frames") == 2 * inner.count)
            #expect(int(decap, "filteredOut") == inner.count)
            #expect(int(decap, "decapsulated") == inner.count)
            #expect(counts(decap, "dropped").isEmpty)
            expectSameFrames(try frames(output), inner, "decap --filter udp port 4789")

            let onlyGRE = s.file("gre-by-tcpdump.pcap")
            try s.tcpdumpFilter(mixed, "ip proto gre", into: onlyGRE)
            let greCount = try frames(onlyGRE).count
            #expect(greCount == inner.count)
            let summary = try jsonObject(try s.ferrySucceeds(["pcap", "inspect", "--json", "--filter", "ip proto gre", mixed]).stdout)
            #expect(int(summary, "frames") == greCount)
            #expect(int(summary, "tunnelFrames") == greCount)
            #expect(int(summary, "filteredOut") == 2 * inner.count - greCount)
            let tunnels = try #require(summary["tunnels"] as? [[String: Any]])
            #expect(!tunnels.isEmpty && tunnels.allSatisfy { $0["type"] as? String == "gre" }, "\(tunnels)")
        }
    }

    // MARK: - Flag values

    struct BadFlags: Sendable, CustomTestStringConvertible {
        var arguments: [String]
        /// Words the message must contain (case-insensitive), naming the value and what is wrong.
        var mentions: [String]
        var testDescription: String { arguments.joined(separator: " ") }
    }

    static let v4 = ["--local", "10.99.0.1", "--remote", "10.99.0.2"]

    static let badFlags: [BadFlags] = [
        BadFlags(arguments: ["--vni", "16777216"] + v4, mentions: ["16777216", "--vni", "16777215"]),
        BadFlags(arguments: ["--vni", "-1"] + v4, mentions: ["--vni"]),
        BadFlags(arguments: ["--vni", "abc"] + v4, mentions: ["abc", "--vni"]),
        BadFlags(arguments: ["--vni", "1", "--local", "10.0.0.256", "--remote", "10.99.0.2"], mentions: ["10.0.0.256", "address"]),
        BadFlags(arguments: ["--vni", "1", "--local", "10.0.0.1", "--remote", "fd00::1"],
                 mentions: ["10.0.0.1", "fd00::1", "ip version"]),
        BadFlags(arguments: ["--vni", "1", "--ttl", "0"] + v4, mentions: ["ttl", "'0'", "1 to 255"]),
        BadFlags(arguments: ["--vni", "1", "--ttl", "256"] + v4, mentions: ["ttl", "256"]),
        BadFlags(arguments: ["--vni", "1", "--tos", "300"] + v4, mentions: ["tos", "300"]),
        BadFlags(arguments: ["--vni", "1", "--src-port-range", "5-1"] + v4, mentions: ["5-1", "port range"]),
        BadFlags(arguments: ["--vni", "1", "--src-port-range", "0-10"] + v4, mentions: ["0-10", "port range"]),
        BadFlags(arguments: ["--vni", "1", "--dstport", "0"] + v4, mentions: ["port", "'0'"]),
        BadFlags(arguments: ["--vni", "1", "--encap", "ipip"] + v4, mentions: ["ipip", "vxlan", "gre"]),
        BadFlags(arguments: ["--encap", "gre", "--vni", "1"] + v4, mentions: ["--vni", "gre", "--key"]),
        BadFlags(arguments: ["--encap", "vxlan", "--vni", "1", "--key", "1"] + v4, mentions: ["--key", "vxlan"]),
        BadFlags(arguments: ["--key", "1", "--udp-csum"] + v4, mentions: ["--udp-csum"]),
        BadFlags(arguments: ["--vni", "1", "--gre-seq"] + v4, mentions: ["--vni", "gre"]),
        BadFlags(arguments: v4, mentions: ["vni"]),
        BadFlags(arguments: ["--vni", "1", "--local", "10.99.0.1"], mentions: ["--remote"]),
        BadFlags(arguments: ["--vni", "1", "--local-mac", "02:00:00:00:00"] + v4, mentions: ["02:00:00:00:00", "mac"]),
    ]

    @Test(arguments: badFlags)
    func invalidEncapFlagIsAUsageError(_ bad: BadFlags) throws {
        try withScratch { s in
            let sample = try s.sample()
            let output = s.file("out.pcap")
            let result = try s.ferry(["pcap", "encap"] + bad.arguments + [sample, output])
            #expect(result.status == Self.usageError, "\(result)")
            let message = result.stderr.lowercased()
            for word in bad.mentions {
                #expect(message.contains(word.lowercased()), "the message should mention \(word): \(result.stderr)")
            }
            #expect(!FileManager.default.fileExists(atPath: output), "a refused command wrote \(output)")
        }
    }

    /// "abc" is not a number at all; calling it "out of range" sends the user looking for the
    /// wrong mistake.
    @Test(arguments: [["--vni", "abc"], ["--ttl", "ten"], ["--key", "0xZZ"]])
    func nonNumericValueIsNotCalledOutOfRange(_ flag: [String]) throws {
        try withScratch { s in
            let sample = try s.sample()
            var arguments = ["pcap", "encap"] + Self.v4
            if flag[0] != "--vni" && flag[0] != "--key" { arguments += ["--vni", "1"] }
            let result = try s.ferry(arguments + flag + [sample, s.file("out.pcap")])
            #expect(result.status == Self.usageError, "\(result)")
            #expect(result.stderr.contains(flag[1]), "\(result)")
            #expect(!result.stderr.contains("out of range"),
                    "'\(flag[1])' is not a number, not a number out of range: \(result.stderr)")
        }
    }

    @Test(arguments: [["--vni", "16777216"], ["--key", "4294967296"], ["--dstport", "65536"], ["--vni", "x"]])
    func invalidDecapFlagIsAUsageError(_ flag: [String]) throws {
        try withScratch { s in
            let result = try s.ferry(["pcap", "decap"] + flag + [Tools.reference("kernel-vxlan.pcap"), s.file("out.pcap")])
            #expect(result.status == Self.usageError, "\(result)")
            #expect(result.stderr.contains(flag[0]) && result.stderr.contains(flag[1]), "\(result)")
        }
    }

    @Test func unknownSubcommandIsAUsageError() throws {
        try withScratch { s in
            let result = try s.ferry("pcap", "frobnicate")
            #expect(result.status == Self.usageError, "\(result)")
            #expect(result.stderr.contains("frobnicate"), "\(result)")
        }
    }
}
