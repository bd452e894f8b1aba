import FerryWire

/// Picks a free container subnet from a cluster range: a pure function of the range, the
/// subnet length, the subnets taken and the host asking. The first candidate is where the
/// host's address hashes to (FNV-1a: the same on every run and every machine), then the next
/// ones in order, wrapping: hosts spread over the range rather than racing for its first
/// subnet, and a host that lost its subnet (its lease lapsed, and nobody took it) finds the
/// same one again.
public struct SubnetAllocator: Sendable, Equatable {
    public let network: IPPrefix
    public let subnetLength: Int

    /// IPv4 ranges only; `subnetLength` longer than the range's.
    public init(network: IPPrefix, subnetLength: Int) throws(MembershipError) {
        guard case .v4 = network.address else { throw MembershipError("subnet ranges are IPv4; \(network) is not") }
        guard subnetLength > network.length, subnetLength <= 32 else {
            throw MembershipError("a subnet length of \(subnetLength) does not fit in \(network)")
        }
        self.network = network
        self.subnetLength = subnetLength
    }

    /// How many subnets the range holds.
    public var count: Int { 1 << (subnetLength - network.length) }

    /// The `index`th subnet of the range.
    public func subnet(at index: Int) -> IPPrefix {
        guard case .v4(let base) = network.address else { preconditionFailure("IPv4 only") }
        let value = base.value &+ UInt32(truncatingIfNeeded: index) << UInt32(32 - subnetLength)
        return IPPrefix(.v4(IPv4Address(value: value)), length: subnetLength)!
    }

    /// Whether `subnet` is one this allocator hands out (in the range, of the length).
    public func holds(_ subnet: IPPrefix) -> Bool { subnet.length == subnetLength && network.contains(subnet.address) }

    /// A free subnet for `host`, nil when every one is taken.
    public func free(for host: IPAddress, taken: Set<IPPrefix>) -> IPPrefix? {
        let n = count
        let start = Int(Self.fnv1a(host.description) % UInt64(n))
        // Only as many steps as there are taken subnets in the range, plus one, can be needed.
        let inRange = taken.filter(holds).count
        guard inRange < n else { return nil }
        for step in 0...inRange {
            let candidate = subnet(at: (start + step) % n)
            if !taken.contains(candidate) { return candidate }
        }
        return nil
    }

    /// The bridge's address in `subnet`: its first host address (10.16.3.1/24 in 10.16.3.0/24).
    public static func gateway(of subnet: IPPrefix) -> InterfaceAddress {
        guard case .v4(let a) = subnet.address else { preconditionFailure("IPv4 only") }
        return InterfaceAddress(.v4(IPv4Address(value: a.value + 1)), length: subnet.length)!
    }

    static func fnv1a(_ text: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in text.utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }
}
