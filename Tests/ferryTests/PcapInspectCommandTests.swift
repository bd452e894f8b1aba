import FerryCapture
import Foundation
import Testing

/// `ferry pcap inspect` on the captures of real peers: tunnels, directions, inner flows, frame
/// sizes and overhead, checked against the capture files themselves and against tshark.
@Suite struct PcapInspectCommandTests {
    static let references = PcapDecapCommandTests.references

    @Test(arguments: references)
    func jsonSummaryOfAReferenceCapture(_ r: PcapDecapCommandTests.Reference) throws {
        try withScratch { s in
            let summary = try jsonObject(try s.ferrySucceeds(["pcap", "inspect", "--json", r.path]).stdout)
            let outer = try frames(r.path)
            try #require(outer.count == 12)
            let wire = outer.reduce(0) { $0 + $1.originalLength }

            #expect(int(summary, "frames") == 12)
            #expect(int(summary, "tunnelFrames") == 12)
            #expect(counts(summary, "otherFrames").isEmpty && counts(summary, "malformedFrames").isEmpty, "\(summary)")

            // One tunnel per direction, 6 packets each way.
            let tunnels = try #require(summary["tunnels"] as? [[String: Any]])
            #expect(tunnels.count == 2, "\(tunnels)")
            var directions: Set<String> = []
            for t in tunnels {
                #expect(t["type"] as? String == (r.isGRE ? "gre" : "vxlan"), "\(t)")
                #expect(int(t, "packets") == 6, "\(t)")
                if r.isGRE {
                    #expect(int(t, "key") == 42, "\(t)")
                    #expect(t["vni"] == nil, "\(t)")
                } else {
                    #expect(int(t, "vni") == 42, "\(t)")
                    #expect(int(t, "destinationPort") == 4789, "\(t)")
                    #expect(t["key"] == nil, "\(t)")
                    #expect(counts(t, "udpChecksums") == [r.udpChecksum!: 6], "\(t)")
                }
                directions.insert("\(t["outerSource"] as? String ?? "?") -> \(t["outerDestination"] as? String ?? "?")")
            }
            #expect(directions == ["10.200.0.1 -> 10.200.0.2", "10.200.0.2 -> 10.200.0.1"])
            // Which direction each frame went, from the file: odd frames 1 -> 2, even frames 2 -> 1.
            let wireByDirection = Dictionary(grouping: outer.enumerated(), by: { $0.offset % 2 })
                .mapValues { $0.reduce(0) { $0 + $1.element.originalLength } }
            for t in tunnels {
                let forward = t["outerSource"] as? String == "10.200.0.1"
                #expect(int(t, "wireBytes") == wireByDirection[forward ? 0 : 1], "\(t)")
            }
            #expect(tunnels.compactMap { int($0, "wireBytes") }.reduce(0, +) == wire)

            // Inner flows: the ARP exchange and the echoes, as tshark counts them.
            let flows = try #require(summary["innerFlows"] as? [[String: Any]])
            let byName = Dictionary(uniqueKeysWithValues: flows.compactMap { f in
                (f["description"] as? String).map { ($0, int(f, "packets") ?? -1) }
            })
            let rows = try s.tshark(r.path, fields: ["ip.src", "ip.dst", "ip.proto"])
            let echoesForward = rows.filter { $0.all("ip.proto").last == "1" && $0.all("ip.src").last == "10.201.0.1" }.count
            #expect(echoesForward == 5)
            #expect(byName["icmp 10.201.0.1 > 10.201.0.2"] == echoesForward, "\(byName)")
            #expect(byName.keys.contains { $0.hasPrefix("arp") && $0.contains("10.201.0.1") && $0.contains("10.201.0.2") },
                    "\(byName)")
            #expect(flows.compactMap { int($0, "packets") }.reduce(0, +) == 12)

            // Frame sizes: each histogram covers every frame, and the outer one matches the file.
            let buckets = try #require(summary["frameSizes"] as? [[String: Any]])
            #expect(buckets.compactMap { int($0, "outerFrames") }.reduce(0, +) == 12)
            #expect(buckets.compactMap { int($0, "innerFrames") }.reduce(0, +) == 12)
            for b in buckets {
                let label = b["range"] as? String ?? ""
                let inBucket = outer.filter { Self.bucket(label, contains: $0.originalLength) }.count
                #expect(int(b, "outerFrames") == inBucket, "bucket \(label): \(b)")
                let innerInBucket = outer.filter { Self.bucket(label, contains: $0.originalLength - r.headerLength) }.count
                #expect(int(b, "innerFrames") == innerInBucket, "bucket \(label): \(b)")
            }

            // Overhead: what the wire carried minus the inner frames, 50 (VXLAN) or 42 (GRE with
            // a key) bytes per packet.
            #expect(int(summary, "wireBytes") == wire)
            #expect(int(summary, "innerBytes") == wire - 12 * r.headerLength)
            #expect(int(summary, "overheadBytes") == (int(summary, "wireBytes") ?? 0) - (int(summary, "innerBytes") ?? 0))
            #expect(int(summary, "overheadBytes").map { $0 / 12 } == r.headerLength)
            #expect(int(summary, "overheadBytes").map { $0 % 12 } == 0)
            let share = try #require((summary["overheadShare"] as? NSNumber)?.doubleValue)
            #expect(abs(share - Double(12 * r.headerLength) / Double(wire)) < 0.0001)
        }
    }

    @Test(arguments: references)
    func humanSummaryNamesTheTunnelAndItsOverhead(_ r: PcapDecapCommandTests.Reference) throws {
        try withScratch { s in
            let text = try s.ferrySucceeds(["pcap", "inspect", r.path]).stdout
            #expect(text.contains(r.isGRE ? "gre" : "vxlan"), "\(text)")
            #expect(text.contains(r.isGRE ? "key 42" : "vni 42"), "\(text)")
            #expect(text.contains("10.200.0.1") && text.contains("10.200.0.2"), "\(text)")
            #expect(text.contains("icmp 10.201.0.1 > 10.201.0.2"), "\(text)")
            let overheadLines = text.split(separator: "\n").filter { $0.lowercased().contains("overhead") }
            #expect(overheadLines.contains { $0.contains("\(12 * r.headerLength)") && $0.contains("\(r.headerLength)") },
                    "the overhead line should give \(12 * r.headerLength) bytes, \(r.headerLength) per packet: \(text)")
        }
    }

    /// A capture cut short by its snapshot length (`tcpdump -s 96`, usual for header captures)
    /// still holds every outer header and the start of every inner frame: it is tunnel traffic,
    /// counted with the lengths the frames had on the wire, not "malformed".
    @Test(arguments: references)
    func captureCutBySnapshotLengthIsStillTunnelTraffic(_ r: PcapDecapCommandTests.Reference) throws {
        try withScratch { s in
            let outer = try frames(r.path)
            let cut = s.file("cut.pcap")
            let writer = try PcapFileWriter(path: cut, snapshotLength: 96)
            for frame in outer { writer.write(frame) }
            try writer.close()
            let written = try frames(cut)
            try #require(written.filter { $0.originalLength > $0.capturedLength }.count == 10, "the ICMP frames should be cut, the ARP ones not")
            #expect(written.map(\.originalLength) == outer.map(\.originalLength))

            let summary = try jsonObject(try s.ferrySucceeds(["pcap", "inspect", "--json", cut]).stdout)
            #expect(int(summary, "frames") == 12)
            try #require(int(summary, "tunnelFrames") == 12 && counts(summary, "malformedFrames").isEmpty,
                         "cut frames counted as malformed: \(counts(summary, "malformedFrames"))")
            let wire = outer.reduce(0) { $0 + $1.originalLength }
            #expect(int(summary, "wireBytes") == wire)
            #expect(int(summary, "overheadBytes") == 12 * r.headerLength)
            let flows = summary["innerFlows"] as? [[String: Any]] ?? []
            #expect(flows.contains { $0["description"] as? String == "icmp 10.201.0.1 > 10.201.0.2" && int($0, "packets") == 5 },
                    "\(flows)")
        }
    }

    /// Inspect reads what encap wrote: the tunnels and the sample's flows, over both IP versions.
    @Test func inspectOfAMixedCaptureListsEveryTunnelAndTheOtherTraffic() throws {
        try withScratch { s in
            let sample = try s.sample()
            let inner = try frames(sample)
            var mixed: [OwnedFrame] = []
            let variants = ["vxlan-ipv6", "gre-csum-key7-seq-ipv6"].map { n in EncapVariant.all.first { $0.name == n }! }
            for v in variants {
                let path = s.file("\(v.name).pcap")
                try s.ferrySucceeds(v.encapArguments(input: sample, output: path))
                mixed += try frames(path)
            }
            mixed += inner
            let mixedPath = s.file("mixed.pcap")
            try writeCapture(mixed, to: mixedPath)

            let summary = try jsonObject(try s.ferrySucceeds(["pcap", "inspect", "--json", mixedPath]).stdout)
            #expect(int(summary, "frames") == mixed.count)
            #expect(int(summary, "tunnelFrames") == 2 * inner.count)
            #expect(counts(summary, "otherFrames").values.reduce(0, +) == inner.count)
            let tunnels = try #require(summary["tunnels"] as? [[String: Any]])
            #expect(Set(tunnels.compactMap { $0["type"] as? String }) == ["vxlan", "gre"])
            #expect(tunnels.allSatisfy { $0["outerSource"] as? String == "fd00:99::1" }, "\(tunnels)")
            let innerBytes = inner.reduce(0) { $0 + $1.originalLength }
            #expect(int(summary, "innerBytes") == 2 * innerBytes)
            #expect(int(summary, "overheadBytes") == inner.count * variants.reduce(0) { $0 + $1.headerLength })
        }
    }

    /// A bucket label as inspect prints it: "<=64", "65-127", ">9022".
    static func bucket(_ label: String, contains size: Int) -> Bool {
        if label.hasPrefix("<="), let high = Int(label.dropFirst(2)) { return size <= high }
        if label.hasPrefix(">"), let low = Int(label.dropFirst(1)) { return size > low }
        let parts = label.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2 else {
            Issue.record("unexpected bucket label \(label)")
            return false
        }
        return (parts[0]...parts[1]).contains(size)
    }
}
