import Testing
import FerryWire

@Suite struct AddressesTests {
    @Test func ipv4ParsesAndPrints() {
        #expect(IPv4Address("10.200.0.1")?.value == 0x0AC8_0001)
        #expect(IPv4Address("255.255.255.255")?.description == "255.255.255.255")
        for bad in ["", "10.0.0", "10.0.0.256", "10.0.0.1.2", "10..0.1", " 10.0.0.1", "a.b.c.d", "1000.0.0.1"] {
            #expect(IPv4Address(bad) == nil, "\(bad)")
        }
    }

    @Test func ipv6ParsesAndPrintsCanonically() {
        let cases: [(String, String)] = [
            ("fd00::1", "fd00::1"),
            ("::", "::"),
            ("::1", "::1"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:0db8:0000:0000:0000:0000:0002:0001", "2001:db8::2:1"),
            ("fe80::1:2:3:4", "fe80::1:2:3:4"),
            ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
            ("1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"),
            ("::ffff:10.0.0.1", "::ffff:a00:1"),
            ("[fd00::2]", "fd00::2"),
        ]
        for (input, canonical) in cases {
            #expect(IPAddress(input)?.description == canonical, "\(input)")
        }
        #expect(IPv6Address("fd00::1")?.high == 0xFD00_0000_0000_0000)
        #expect(IPv6Address("fd00::1")?.low == 1)
        for bad in ["", ":::", "1::2::3", "1:2:3:4:5:6:7:8:9", "12345::", "g::1", "1:2:3:4:5:6:7", "fd00::1::", "+1::-0"] {
            #expect(IPv6Address(bad) == nil, "\(bad)")
        }
    }

    @Test func macParsesAndPrints() {
        let mac = MACAddress("02:AB:cd:00:0e:ff")
        #expect(mac?.description == "02:ab:cd:00:0e:ff")
        #expect(mac?.isMulticast == false)
        #expect(MACAddress("01:00:5e:00:00:01")?.isMulticast == true)
        #expect(MACAddress.broadcast.isBroadcast)
        for bad in ["", "02:ab:cd:00:0e", "02:ab:cd:00:0e:ff:00", "zz:ab:cd:00:0e:ff", "022:ab:cd:00:0e:f", "+1:2:3:4:5:6"] {
            #expect(MACAddress(bad) == nil, "\(bad)")
        }
    }
}
