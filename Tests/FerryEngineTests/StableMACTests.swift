import FerryEngine
import FerryWire
import Testing

/// The MAC Ferry gives a TAP it makes: a restarted ferry's TAP must not change the MAC of a
/// bridge that takes its lowest port's (the containers' ARP entries for their gateway).
@Suite struct StableMACTests {
    @Test func theSameTAPAndAddressGiveTheSameMACLocallyAdministeredAndUnicast() {
        let local = IPAddress("10.99.0.1")!
        let mac = Engine.stableMAC(tap: "ferry0", local: local)
        #expect(mac == Engine.stableMAC(tap: "ferry0", local: local))
        let first = UInt8(truncatingIfNeeded: mac.value >> 40)
        #expect(first & 0x01 == 0, "unicast: \(mac)")
        #expect(first & 0x02 == 0x02, "locally administered: \(mac)")
        // Another host, or another ferry on the same host: another MAC.
        let others = [Engine.stableMAC(tap: "ferry0", local: IPAddress("10.99.0.2")!),
                      Engine.stableMAC(tap: "ferry1", local: local),
                      Engine.stableMAC(tap: "ferry0", local: IPAddress("fd00:99::1")!)]
        #expect(Set(others + [mac]).count == 4, "\(others) \(mac)")
        // A thousand hosts, a thousand MACs.
        let many = Set((1...1000).map { Engine.stableMAC(tap: "ferry0", local: IPAddress("10.99.\($0 / 256).\($0 % 256)")!) })
        #expect(many.count == 1000)
    }
}
