import FerryLab
import FerryTestSupport
import Foundation
import Testing

/// The offline tools on captures of the kernel's own vxlan device: made with iproute2's defaults
/// (no `dstport`: Linux's 8472, flannel's port too) they decapsulate with no flag; on a port of
/// their own, `inspect` and `decap` say the datagrams look like VXLAN and which `--dstport` reads them.
@Suite(.serialized, .ownThreads, .enabled(if: Live.isRoot, "needs root for network namespaces"))
struct PcapVXLANPortTests {
    /// Two namespaces on a veth pair, a kernel vxlan device in each (VNI 42, `dstport` as given,
    /// none when nil), three pings across it captured on the veth into `path`.
    func kernelVXLANCapture(dstport: Int?, into path: String, prefix: String) throws {
        Lab.removeLeftovers(prefix: prefix)
        defer { Lab.removeLeftovers(prefix: prefix) }
        let a = prefix + "-a", b = prefix + "-b"
        func ip(_ ns: String, _ args: String...) throws { _ = try Lab.capture(["ip", "-n", ns] + args) }
        _ = try Lab.capture(["ip", "netns", "add", a])
        _ = try Lab.capture(["ip", "netns", "add", b])
        _ = try Lab.capture(["ip", "link", "add", "u0", "netns", a, "type", "veth", "peer", "name", "u0", "netns", b])
        for (ns, me, other, inner) in [(a, "10.77.0.1", "10.77.0.2", "10.78.0.1"), (b, "10.77.0.2", "10.77.0.1", "10.78.0.2")] {
            try ip(ns, "addr", "add", "\(me)/24", "dev", "u0")
            try ip(ns, "link", "set", "u0", "up")
            try ip(ns, "link", "set", "lo", "up")
            var add = ["link", "add", "vx0", "type", "vxlan", "id", "42", "remote", other, "local", me, "dev", "u0"]
            if let dstport { add += ["dstport", "\(dstport)"] }
            _ = try Lab.capture(["ip", "-n", ns] + add)
            try ip(ns, "addr", "add", "\(inner)/24", "dev", "vx0")
            try ip(ns, "link", "set", "vx0", "up")
        }
        // As the live tests run it: as root (it writes into the test's scratch directory), every
        // packet at once.
        let log = path + ".log"
        let tcpdump = Process()
        tcpdump.executableURL = URL(fileURLWithPath: try Tools.system("ip"))
        tcpdump.arguments = ["netns", "exec", a, "tcpdump", "-i", "u0", "-n", "-U", "--immediate-mode", "-Z", "root", "-w", path, "udp"]
        guard FileManager.default.createFile(atPath: log, contents: nil) else { throw CocoaError(.fileWriteUnknown) }
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        defer { try? logHandle.close() }
        tcpdump.standardInput = FileHandle.nullDevice
        tcpdump.standardOutput = logHandle
        tcpdump.standardError = logHandle
        try tcpdump.run()
        defer { Lab.stop(tcpdump, timeout: 5) }
        let listening = Lab.waitUntil(timeout: 10) {
            !tcpdump.isRunning || ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("listening on")
        }
        try #require(listening && tcpdump.isRunning, "tcpdump did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        let ping = try Lab.capture(["ip", "netns", "exec", a, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.78.0.2"])
        #expect(ping.status == 0, "the kernel's own tunnel does not carry a ping: \(ping)")
        Thread.sleep(forTimeInterval: 0.3)
        Lab.stop(tcpdump, timeout: 5)
    }

    @Test func linuxsDefaultPortDecapsulatesWithoutFlags() throws {
        try withScratch { s in
            let capture = s.file("vxlan-8472.pcap")
            try kernelVXLANCapture(dstport: nil, into: capture, prefix: "ferry8472")
            // What went over the wire is on 8472, as tshark (which knows only 4789) shows.
            let ports = try s.tshark(capture, fields: ["udp.dstport"]).compactMap { $0.int("udp.dstport") }
            try #require(ports.count >= 6, "the capture holds \(ports.count) datagrams")
            #expect(Set(ports) == [8472], "\(ports)")

            let inspect = try jsonObject(try s.ferrySucceeds(["pcap", "inspect", "--json", capture]).stdout)
            #expect(int(inspect, "tunnelFrames") == ports.count, "\(inspect)")
            #expect(counts(inspect, "otherFrames").isEmpty, "\(inspect)")
            let tunnels = try #require(inspect["tunnels"] as? [[String: Any]])
            #expect(tunnels.allSatisfy { int($0, "destinationPort") == 8472 && int($0, "vni") == 42 }, "\(tunnels)")

            let inner = s.file("inner.pcap")
            let decap = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--json", capture, inner]).stdout)
            #expect(int(decap, "decapsulated") == ports.count, "\(decap)")
            let echoes = try s.tshark(inner, fields: ["icmp.type"]).compactMap { $0.int("icmp.type") }
            #expect(echoes.filter { $0 == 8 }.count == 3 && echoes.filter { $0 == 0 }.count == 3, "\(echoes)")

            // Told another port, they look there only, and say where the VXLAN is.
            let told = try s.ferrySucceeds(["pcap", "inspect", "--dstport", "4789", capture]).stdout
            #expect(told.contains("0 tunnel") && told.contains("give --dstport 8472"), "\(told)")
        }
    }

    @Test func anotherPortIsNamedWithTheFlagThatReadsIt() throws {
        try withScratch { s in
            let capture = s.file("vxlan-4790.pcap")
            try kernelVXLANCapture(dstport: 4790, into: capture, prefix: "ferry4790")
            let count = try s.tshark(capture, fields: ["udp.dstport"]).filter { $0.int("udp.dstport") == 4790 }.count
            try #require(count >= 6)
            let inspect = try s.ferrySucceeds(["pcap", "inspect", capture]).stdout
            #expect(inspect.contains("\(count) frames: 0 tunnel, \(count) other traffic"), "\(inspect)")
            #expect(inspect.contains("note: \(count) UDP datagrams to port 4790 look like VXLAN; give --dstport 4790 to read them as such"),
                    "\(inspect)")
            let json = try jsonObject(try s.ferrySucceeds(["pcap", "inspect", "--json", capture]).stdout)
            #expect(counts(json, "vxlanLookalikes") == ["4790": count], "\(json)")
            let decap = try s.ferrySucceeds(["pcap", "decap", capture, s.file("none.pcap")]).stdout
            #expect(decap.contains("give --dstport 4790"), "\(decap)")
            let read = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--json", "--dstport", "4790", capture, s.file("inner.pcap")]).stdout)
            #expect(int(read, "decapsulated") == count && counts(read, "vxlanLookalikes").isEmpty, "\(read)" as Comment)
        }
    }
}
