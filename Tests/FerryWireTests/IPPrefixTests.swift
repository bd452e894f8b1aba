import FerryWire
import Testing

@Suite struct IPPrefixTests {
    @Test("prefixes of both families parse, print as written, and hold what lies inside")
    func parsesAndContains() throws {
        let v4 = try IPPrefix(parsing: "10.99.0.0/16")
        #expect(v4.description == "10.99.0.0/16")
        #expect(v4.contains(IPAddress("10.99.0.1")!))
        #expect(v4.contains(IPAddress("10.99.255.255")!))
        #expect(!v4.contains(IPAddress("10.98.255.255")!))
        #expect(!v4.contains(IPAddress("10.100.0.0")!))
        #expect(!v4.contains(IPAddress("fd00::a63:1")!), "another family is never inside")

        let v6 = try IPPrefix(parsing: "fd00:99::/64")
        #expect(v6.contains(IPAddress("fd00:99::ffff:1")!))
        #expect(!v6.contains(IPAddress("fd00:99:0:1::1")!))
        // A length past 64 masks the low half too.
        let narrow = try IPPrefix(parsing: "fd00:99::80/121")
        #expect(narrow.contains(IPAddress("fd00:99::ff")!))
        #expect(!narrow.contains(IPAddress("fd00:99::7f")!))

        let all = try IPPrefix(parsing: "0.0.0.0/0")
        #expect(all.contains(IPAddress("255.1.2.3")!))
        let one = try IPPrefix(parsing: "10.0.0.7/32")
        #expect(one.contains(IPAddress("10.0.0.7")!) && !one.contains(IPAddress("10.0.0.6")!))
        #expect(try IPPrefix(parsing: "::/0").contains(IPAddress("fd00::1")!))
    }

    @Test("host bits set is an error that gives the prefix meant")
    func hostBitsSet() {
        #expect(throws: IPPrefix.ParseError.hostBitsSet("10.99.0.1/16", proper: IPPrefix(IPAddress("10.99.0.0")!, length: 16)!)) {
            try IPPrefix(parsing: "10.99.0.1/16")
        }
        do {
            _ = try IPPrefix(parsing: "fd00:99::1/64")
            Issue.record("accepted host bits")
        } catch {
            #expect(error.description == "'fd00:99::1/64' has bits set past its length; write fd00:99::/64")
        }
    }

    @Test("malformed text and lengths out of range are refused, each saying why")
    func refusals() {
        for bad in ["10.99.0.0", "10.99.0.0/", "/16", "10.99.0/16", "10.99.0.0/16/1", "10.99.0.0/a", "10.99.0.0/+8",
                    "10.99.0.0/-1", "fd00::/0064", " 10.0.0.0/8"] {
            #expect(throws: IPPrefix.ParseError.malformed(bad), "\(bad)") { try IPPrefix(parsing: bad) }
        }
        #expect(throws: IPPrefix.ParseError.lengthOutOfRange("10.0.0.0/33", maximum: 32)) { try IPPrefix(parsing: "10.0.0.0/33") }
        #expect(throws: IPPrefix.ParseError.lengthOutOfRange("fd00::/129", maximum: 128)) { try IPPrefix(parsing: "fd00::/129") }
        #expect(IPPrefix(IPAddress("10.0.0.1")!, length: 24) == nil)
        #expect(IPPrefix(IPAddress("10.0.0.0")!, length: 24)?.description == "10.0.0.0/24")
    }
}
