import Foundation
import Testing

/// `ferry overhead`: every figure recomputed here from Ethernet's and the tunnels' header sizes.
@Suite struct OverheadCommandTests {
    /// The sizes the help text lists as the default.
    static let defaultSizes = [64, 128, 256, 512, 1024, 1450, 1514, 9014]

    struct Row {
        var tunnel: String
        var inner, header, wire, native, added: Int
        var efficiency, physicalEfficiency, relativeToNative: Double
        var fits: Bool
    }

    /// Header bytes in front of the inner frame for a tunnel named like "gre-key-csum-seq-ipv6":
    /// Ethernet 14, IPv4 20 or IPv6 40, then UDP 8 + VXLAN 8, or GRE 4 + 4 per optional field.
    static func expectedHeader(_ name: String) -> Int? {
        let parts = Set(name.split(separator: "-").map(String.init))
        let ip = parts.contains("ipv6") ? 40 : parts.contains("ipv4") ? 20 : nil
        guard let ip else { return nil }
        if parts.contains("vxlan") { return 14 + ip + 16 }
        guard parts.contains("gre") else { return nil }
        return 14 + ip + 4 + ["key", "csum", "seq"].filter(parts.contains).count * 4
    }

    /// Ethernet on the wire: padded to 60 bytes, plus the 4-byte FCS; preamble, SFD and gap add 20.
    static func onWire(_ frame: Int) -> Int { max(frame, 60) + 4 }

    static func parseCSV(_ text: String) throws -> [Row] {
        let lines = text.split(separator: "\n").map(String.init)
        try #require(lines.first?.split(separator: ",").map(String.init) == [
            "tunnel", "inner_bytes", "header_bytes", "wire_bytes", "native_wire_bytes", "added_bytes",
            "efficiency", "physical_efficiency", "relative_to_native", "fits_mtu",
        ], "CSV header: \(lines.first ?? "none")")
        return try lines.dropFirst().map { line in
            let c = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            try #require(c.count == 10, "CSV row: \(line)")
            func i(_ k: Int) throws -> Int { try #require(Int(c[k]), "column \(k) of \(line)") }
            func d(_ k: Int) throws -> Double { try #require(Double(c[k]), "column \(k) of \(line)") }
            try #require(c[9] == "true" || c[9] == "false", "fits_mtu of \(line)")
            return Row(tunnel: c[0], inner: try i(1), header: try i(2), wire: try i(3), native: try i(4), added: try i(5),
                       efficiency: try d(6), physicalEfficiency: try d(7), relativeToNative: try d(8), fits: c[9] == "true")
        }
    }

    static func parseJSON(_ text: String) throws -> [Row] {
        try jsonArray(text).map { o in
            func i(_ k: String) throws -> Int { try #require(int(o, k), "\(k) in \(o)") }
            func d(_ k: String) throws -> Double { try #require((o[k] as? NSNumber)?.doubleValue, "\(k) in \(o)") }
            return Row(tunnel: try #require(o["tunnel"] as? String), inner: try i("innerBytes"), header: try i("headerBytes"),
                       wire: try i("wireBytes"), native: try i("nativeWireBytes"), added: try i("addedBytes"),
                       efficiency: try d("efficiency"), physicalEfficiency: try d("physicalEfficiency"),
                       relativeToNative: try d("relativeToNative"), fits: try #require(o["fitsMTU"] as? Bool))
        }
    }

    /// Every figure of a row, recomputed; printed ratios are rounded to 4 places.
    static func check(_ r: Row, mtu: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let what = "\(r.tunnel) \(r.inner)"
        guard let header = expectedHeader(r.tunnel) else {
            Issue.record("unknown tunnel variant \(r.tunnel)", sourceLocation: sourceLocation)
            return
        }
        #expect(r.header == header, "\(what): header", sourceLocation: sourceLocation)
        let wire = onWire(r.inner + header), native = onWire(r.inner)
        #expect(r.wire == wire, "\(what): wire bytes", sourceLocation: sourceLocation)
        #expect(r.native == native, "\(what): native wire bytes", sourceLocation: sourceLocation)
        #expect(r.added == wire - native, "\(what): added bytes", sourceLocation: sourceLocation)
        if r.inner >= 64 {
            #expect(r.added == header, "\(what): a full-size frame gains exactly the header", sourceLocation: sourceLocation)
        }
        let tolerance = 0.00006
        #expect(abs(r.efficiency - Double(r.inner) / Double(wire)) < tolerance, "\(what): efficiency", sourceLocation: sourceLocation)
        #expect(abs(r.physicalEfficiency - Double(r.inner) / Double(wire + 20)) < tolerance, "\(what): physical efficiency",
                sourceLocation: sourceLocation)
        #expect(abs(r.relativeToNative - Double(native + 20) / Double(wire + 20)) < tolerance, "\(what): relative to native",
                sourceLocation: sourceLocation)
        // The outer IP packet is everything after the outer Ethernet header.
        #expect(r.fits == (r.inner + header - 14 <= mtu), "\(what): fits \(mtu)", sourceLocation: sourceLocation)
    }

    @Test func csvHasARowPerVariantAndSizeAndItsFiguresAddUp() throws {
        try withScratch { s in
            let rows = try Self.parseCSV(try s.ferrySucceeds(["overhead", "--csv"]).stdout)
            let variants = Set(rows.map(\.tunnel))
            #expect(variants.isSuperset(of: ["vxlan-ipv4", "vxlan-ipv6"]), "\(variants)")
            #expect(variants.contains { $0.hasPrefix("gre") }, "\(variants)")
            #expect(variants.contains { $0.hasPrefix("gre") && $0.contains("ipv6") }, "\(variants)")
            for variant in variants {
                #expect(rows.filter { $0.tunnel == variant }.map(\.inner) == Self.defaultSizes, "\(variant)")
            }
            #expect(rows.count == variants.count * Self.defaultSizes.count)
            for r in rows { Self.check(r, mtu: 1500) }
            #expect(rows.filter { $0.tunnel == "vxlan-ipv4" }.allSatisfy { $0.added == 50 })
            #expect(rows.filter { $0.tunnel == "vxlan-ipv6" }.allSatisfy { $0.added == 70 })
        }
    }

    @Test func jsonGivesTheSameRowsAsCSV() throws {
        try withScratch { s in
            let json = try Self.parseJSON(try s.ferrySucceeds(["overhead", "--json"]).stdout)
            let csv = try Self.parseCSV(try s.ferrySucceeds(["overhead", "--csv"]).stdout)
            #expect(json.count == csv.count)
            for (j, c) in zip(json, csv) {
                Self.check(j, mtu: 1500)
                #expect(j.tunnel == c.tunnel && j.inner == c.inner && j.wire == c.wire && j.added == c.added && j.fits == c.fits)
                #expect(abs(j.efficiency - c.efficiency) < 0.00001)
            }
        }
    }

    @Test func sizesRestrictTheRows() throws {
        try withScratch { s in
            let rows = try Self.parseCSV(try s.ferrySucceeds(["overhead", "--csv", "--sizes", "100", "200"]).stdout)
            let variants = Set(rows.map(\.tunnel))
            #expect(variants.count >= 2)
            #expect(rows.count == 2 * variants.count)
            for variant in variants {
                #expect(rows.filter { $0.tunnel == variant }.map(\.inner) == [100, 200], "\(variant)")
            }
            for r in rows { Self.check(r, mtu: 1500) }
        }
    }

    /// A frame that fits a 1500-byte underlay does not fit 1400, and a jumbo one fits 9000.
    @Test(arguments: [1400, 1500, 9000])
    func mtuDecidesWhatFits(_ mtu: Int) throws {
        try withScratch { s in
            let sizes = [1350, 1364, 1365, 1400, 1450, 1514, 8950, 9014]
            let rows = try Self.parseCSV(try s.ferrySucceeds(["overhead", "--csv", "--mtu", String(mtu), "--sizes"]
                                                             + sizes.map(String.init)).stdout)
            #expect(rows.count >= 2 * sizes.count)
            for r in rows { Self.check(r, mtu: mtu) }
            // Both answers occur for VXLAN over IPv4 at every MTU tried.
            let vxlan = rows.filter { $0.tunnel == "vxlan-ipv4" }
            #expect(vxlan.contains { $0.fits } && vxlan.contains { !$0.fits }, "mtu \(mtu)")
        }
    }

    @Test func tableIsTheDefault() throws {
        try withScratch { s in
            let text = try s.ferrySucceeds(["overhead", "--sizes", "1450"]).stdout
            #expect(text.contains("vxlan-ipv4") && text.contains("vxlan-ipv6"), "\(text)")
            #expect(text.contains("1450") && text.contains("+50") && text.contains("+70"), "\(text)")
        }
    }

    @Test func csvAndJSONTogetherAreAUsageError() throws {
        try withScratch { s in
            let result = try s.ferry("overhead", "--csv", "--json")
            #expect(result.status == 64, "\(result)")
            #expect(result.stderr.contains("--csv") && result.stderr.contains("--json"), "\(result)")
            #expect(result.stdout.isEmpty, "\(result)")
        }
    }

    @Test(arguments: [["--sizes", "5"], ["--sizes", "70000"], ["--mtu", "20"], ["--sizes", "abc"]])
    func impossibleSizesAreUsageErrors(_ arguments: [String]) throws {
        try withScratch { s in
            let result = try s.ferry(["overhead"] + arguments)
            #expect(result.status == 64, "\(result)")
            #expect(result.stderr.contains(arguments[1]), "the message should name \(arguments[1]): \(result)")
        }
    }
}
