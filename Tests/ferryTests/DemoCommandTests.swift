import FerryCapture
import Foundation
import Testing

/// `ferry demo --offline`: the end-to-end run of encap, inspect and decap on a sample capture.
/// (Plain `ferry demo` builds a live namespace lab with iperf3; it is not run here.)
@Suite struct DemoCommandTests {
    @Test func demoReportsFourIdenticalRoundTripsAndCleansUp() throws {
        try withScratch { s in
            // The demo's own scratch directory goes under TMPDIR: point that at ours to see it go.
            let tmp = s.file("tmp")
            try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
            let result = try s.ferry(["demo", "--offline"], environment: ["TMPDIR": tmp + "/"])
            #expect(result.status == 0, "\(result)")
            let lines = result.stdout.split(separator: "\n")
            let roundTrips = lines.filter { $0.hasSuffix("identical") }
            #expect(roundTrips.count == 4, "\(result.stdout)")
            #expect(!result.stdout.contains("MISMATCH"), "\(result.stdout)")
            // VXLAN and GRE, over IPv4 and IPv6.
            #expect(roundTrips.contains { $0.contains("vxlan") && $0.contains("ipv4") })
            #expect(roundTrips.contains { $0.contains("vxlan") && $0.contains("ipv6") })
            #expect(roundTrips.contains { $0.contains("gre") && $0.contains("ipv4") })
            #expect(roundTrips.contains { $0.contains("gre") && $0.contains("ipv6") })
            let left = try FileManager.default.contentsOfDirectory(atPath: tmp)
            #expect(left.isEmpty, "the demo left files in TMPDIR: \(left)")
        }
    }

    @Test func keptCapturesAreReadableByTshark() throws {
        try withScratch { s in
            let keep = s.file("kept")
            let result = try s.ferrySucceeds(["demo", "--offline", "--keep", keep])
            #expect(result.stdout.contains(keep), "the demo should say where the captures are: \(result.stdout)")
            let files = try FileManager.default.contentsOfDirectory(atPath: keep).filter { $0.hasSuffix(".pcap") }.sorted()
            // The sample, and for each of the 4 tunnels the encapsulated and the decapsulated capture.
            #expect(files.count == 9, "\(files)")

            let sample = try s.sample()
            let sampleFrames = try frames(sample)
            for file in files {
                let path = (keep as NSString).appendingPathComponent(file)
                let rows = try s.tshark(path, fields: ["frame.len", "eth.type", "vxlan.vni", "gre.proto"])
                #expect(rows.count == sampleFrames.count, "\(file): tshark read \(rows.count) frames")
                let tunnelled = rows.filter { !$0.all("vxlan.vni").isEmpty || !$0.all("gre.proto").isEmpty }.count
                let isTunnel = ["vxlan", "gre"].contains { file.hasPrefix($0) } && !file.contains("decap")
                #expect(tunnelled == (isTunnel ? rows.count : 0), "\(file): \(tunnelled) of \(rows.count) frames are tunnel frames")
                if !isTunnel {
                    // The sample and every decapsulated capture hold the same frames as `ferry pcap sample`.
                    expectSameFrames(try frames(path), sampleFrames, file)
                }
            }
        }
    }
}
