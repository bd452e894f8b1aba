import Foundation
import Testing
import FerryCapture

@Suite struct PacketFilterTests {
    /// Counts the frames of a reference capture that pass `expression`, reading without copies.
    func count(_ expression: String, in name: String) throws -> Int {
        let filter = try PacketFilter(expression: expression)
        let reader = try PcapFileReader(path: TestSupport.reference(name))
        var matched = 0
        while let frame = try reader.next() {
            if filter.matches(frame.bytes, originalLength: frame.originalLength) {
                matched += 1
            }
        }
        return matched
    }

    @Test(arguments: TestSupport.vxlanCaptures)
    func vxlanCapturesMatchVXLANFilters(name: String) throws {
        #expect(try count("udp port 4789", in: name) == 12)
        #expect(try count("udp dst port 4789", in: name) == 12)
        #expect(try count("proto gre", in: name) == 0)
        #expect(try count("ip host 10.200.0.1 and udp", in: name) == 12)
        #expect(try count("ip src 10.200.0.1", in: name) == 6)
        #expect(try count("ip src 10.200.0.2 and udp port 4789", in: name) == 6)
        #expect(try count("host 10.200.0.9", in: name) == 0)
        #expect(try count("icmp", in: name) == 0)  // the ICMP is inside the tunnel
        // Byte offsets into the VXLAN header: the I flag, and VNI 42.
        #expect(try count("udp port 4789 and udp[8] = 0x08 and udp[12:4] >> 8 = 42", in: name) == 12)
        #expect(try count("", in: name) == 12)
    }

    @Test func greCaptureMatchesGREFilters() throws {
        let name = "ovs-gre.pcap"
        #expect(try count("udp port 4789", in: name) == 0)
        #expect(try count("proto gre", in: name) == 12)
        #expect(try count("ip proto 47 and host 10.200.0.2", in: name) == 12)
        #expect(try count("ip host 10.200.0.1 and udp", in: name) == 0)
        #expect(try count("ip src 10.200.0.2 and proto gre", in: name) == 6)
        // GRE flags 0x2000 (key present), protocol 0x6558 (Ethernet), key 42.
        #expect(try count("proto gre and ip[20:2] = 0x2000 and ip[22:2] = 0x6558 and ip[24:4] = 42", in: name) == 12)
    }

    @Test(arguments: ["udp port", "nonsense", "udp port 99999", "host", "ip[0:3] = 1"])
    func badExpressionsAreRejectedWithLibpcapsReason(expression: String) {
        #expect {
            try PacketFilter(expression: expression)
        } throws: { error in
            guard case .badFilter(let rejected, let reason) = error as? CaptureError else { return false }
            return rejected == expression && !reason.isEmpty
        }
    }

    /// `greater` and `less` test the length on the wire, which a snapped capture has but its
    /// bytes do not show.
    @Test func lengthTestsUseTheOriginalLength() throws {
        let greater = try PacketFilter(expression: "greater 1000")
        let less = try PacketFilter(expression: "less 100")
        let head = [UInt8](repeating: 0, count: 60)
        head.withUnsafeBytes { bytes in
            #expect(!greater.matches(bytes))
            #expect(greater.matches(bytes, originalLength: 1_500))
            #expect(less.matches(bytes))
            #expect(!less.matches(bytes, originalLength: 1_500))
        }
        let snapped = OwnedFrame(bytes: head, timestamp: .now(), originalLength: 1_500)
        #expect(greater.matches(snapped))
    }

    @Test func emptyAndShortFramesDoNotMatchProtocolTests() throws {
        let udp = try PacketFilter(expression: "udp")
        let everything = try PacketFilter(expression: "")
        #expect(!udp.matches(UnsafeRawBufferPointer(start: nil, count: 0)))
        #expect(everything.matches(UnsafeRawBufferPointer(start: nil, count: 0)))
        [UInt8](repeating: 0, count: 13).withUnsafeBytes { #expect(!udp.matches($0)) }
    }

    @Test func filtersCompiledForAnotherLinkTypeReadOtherOffsets() throws {
        // On raw IP, the IP header starts at byte 0: the same expression compiles differently.
        let raw = try PacketFilter(expression: "ip src 10.200.0.1", linkType: .rawIP)
        #expect(raw.linkType == .rawIP)
        let ethernet = try #require(try PcapFileReader(path: TestSupport.reference("kernel-vxlan.pcap")).readAll().first)
        let ipPacket = Array(ethernet.bytes.dropFirst(14))
        #expect(raw.matches(OwnedFrame(bytes: ipPacket, timestamp: ethernet.timestamp)))
        #expect(!raw.matches(ethernet))
        #expect(try PacketFilter(expression: "ip src 10.200.0.1").matches(ethernet))
    }

    @Test func filtersCompileConcurrentlyAndAreSharedAcrossTasks() async throws {
        let frames = try PcapFileReader(path: TestSupport.reference("ovs-vxlan.pcap")).readAll()
        let expressions = (0..<16).map { $0.isMultiple(of: 2) ? "udp port 4789" : "proto gre" }
        let shared = try PacketFilter(expression: "ip src 10.200.0.1")
        let counts = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for (index, expression) in expressions.enumerated() {
                group.addTask {
                    let filter = try PacketFilter(expression: expression)
                    // Every task also runs the one shared filter: it must give the same answer.
                    #expect(frames.filter { shared.matches($0) }.count == 6)
                    return (index, frames.filter { filter.matches($0) }.count)
                }
            }
            var counts = [Int](repeating: -1, count: expressions.count)
            for try await (index, count) in group {
                counts[index] = count
            }
            return counts
        }
        #expect(counts == expressions.map { $0 == "udp port 4789" ? 12 : 0 })
    }
}
