import FerryMembership
import FerryWire
import Testing

@Suite struct SubnetAllocatorTests {
    static func prefix(_ s: String) -> IPPrefix { try! IPPrefix(parsing: s) }
    static func address(_ s: String) -> IPAddress { IPAddress(s)! }

    @Test func sameHostSameSubnetEveryTimeAndInTheRange() throws {
        let a = try SubnetAllocator(network: Self.prefix("10.16.0.0/12"), subnetLength: 24)
        #expect(a.count == 4096)
        let first = a.free(for: Self.address("192.168.99.1"), taken: [])
        let again = try SubnetAllocator(network: Self.prefix("10.16.0.0/12"), subnetLength: 24)
            .free(for: Self.address("192.168.99.1"), taken: [])
        #expect(first == again)
        #expect(first.map(a.holds) == true)
        #expect(first?.length == 24)
    }

    @Test func hostsSpreadOverTheRange() throws {
        let a = try SubnetAllocator(network: Self.prefix("10.16.0.0/12"), subnetLength: 24)
        let picks = Set((1...20).compactMap { a.free(for: Self.address("10.99.0.\($0)"), taken: []) })
        // Twenty hosts each asking an empty range first: nearly all distinct starting points
        // (a plain first-free allocator would give all twenty the same one).
        #expect(picks.count >= 18, "\(picks)")
    }

    @Test func takenSubnetsAreSkippedInOrderAndAFullRangeHasNone() throws {
        let a = try SubnetAllocator(network: Self.prefix("10.16.0.0/28"), subnetLength: 30)
        #expect(a.count == 4)
        let host = Self.address("10.99.0.7")
        var taken = Set<IPPrefix>()
        for _ in 0..<4 {
            let next = try #require(a.free(for: host, taken: taken))
            #expect(!taken.contains(next))
            taken.insert(next)
        }
        #expect(taken == Set((0..<4).map(a.subnet(at:))))
        #expect(a.free(for: host, taken: taken) == nil)
        // Subnets outside the range do not count as taken in it.
        #expect(a.free(for: host, taken: [Self.prefix("10.17.0.0/30")]) != nil)
    }

    @Test func subnetsAndGateways() throws {
        let a = try SubnetAllocator(network: Self.prefix("10.16.0.0/12"), subnetLength: 16)
        #expect(a.subnet(at: 0) == Self.prefix("10.16.0.0/16"))
        #expect(a.subnet(at: 15) == Self.prefix("10.31.0.0/16"))
        #expect(SubnetAllocator.gateway(of: Self.prefix("10.16.3.0/24")).description == "10.16.3.1/24")
        #expect(!a.holds(Self.prefix("10.32.0.0/16")))
        #expect(!a.holds(Self.prefix("10.16.0.0/24")))
    }

    @Test func badRangesAreRefused() {
        #expect(throws: MembershipError.self) { try SubnetAllocator(network: Self.prefix("10.16.0.0/24"), subnetLength: 24) }
        #expect(throws: MembershipError.self) { try SubnetAllocator(network: Self.prefix("fd00::/64"), subnetLength: 80) }
    }
}

@Suite struct MembershipLayoutTests {
    @Test func keysAndTheirParts() throws {
        let l = MembershipLayout(prefix: "/ferry/network/")
        #expect(l.configKey == "/ferry/network/config")
        let address = IPAddress("10.99.0.1")!
        #expect(l.hostKey(address) == "/ferry/network/hosts/10.99.0.1")
        #expect(l.address(ofHostKey: l.hostKey(address)) == address)
        let subnet = try IPPrefix(parsing: "10.16.3.0/24")
        #expect(l.subnetKey(subnet) == "/ferry/network/subnets/10.16.3.0-24")
        #expect(l.subnet(ofKey: l.subnetKey(subnet)) == subnet)
        #expect(l.subnet(ofKey: "/ferry/network/subnets/junk") == nil)
        #expect(l.address(ofHostKey: "/ferry/network/config") == nil)
    }

    @Test func configChecksAndRoundTrips() throws {
        let c = NetworkConfig(encapsulation: "vxlan", vni: 42, network: "10.16.0.0/12", subnetLength: 16)
        try c.check()
        #expect(try NetworkConfig.decode(c.encoded(), key: "k") == c)
        #expect(try c.range()?.subnetLength == 16)
        #expect(throws: MembershipError.self) { try NetworkConfig(encapsulation: "vxlan").check() }
        #expect(throws: MembershipError.self) { try NetworkConfig(encapsulation: "geneve", vni: 1).check() }
        #expect(throws: MembershipError.self) { try NetworkConfig(encapsulation: "gre", network: "10.16.0.0/12", subnetLength: 8).check() }
        #expect(throws: MembershipError.self) { try NetworkConfig.decode(Array("not json".utf8), key: "/p/config") }
    }

    @Test func diffRemovesAddsAndReplacesAChangedSubnet() throws {
        let a = IPAddress("10.99.0.1")!, b = IPAddress("10.99.0.2")!, c = IPAddress("10.99.0.3")!
        let s1 = try IPPrefix(parsing: "10.16.1.0/24"), s2 = try IPPrefix(parsing: "10.16.2.0/24")
        let (remove, add) = MembershipDiff.changes(
            applied: [a: PeerSpecs.make(a, nil), b: PeerSpecs.make(b, s1)],
            wanted: [b: PeerSpecs.make(b, s2), c: PeerSpecs.make(c, nil)])
        #expect(remove == [a, b])
        #expect(add == [PeerSpecs.make(b, s2), PeerSpecs.make(c, nil)])
    }
}
