/// An address prefix (CIDR block) of either family: `10.99.0.0/16`, `fd00:99::/64`. The
/// address holds no bits past the length, so that a prefix is written one way only.
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let length: Int

    /// Why a text is not a prefix.
    public enum ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        /// Not ADDRESS/LENGTH with an address of either family.
        case malformed(String)
        /// A length past the family's bits.
        case lengthOutOfRange(String, maximum: Int)
        /// Bits set past the length: `proper` is the prefix meant, most likely.
        case hostBitsSet(String, proper: IPPrefix)

        public var description: String {
            switch self {
            case .malformed(let text):
                "'\(text)' is not a prefix; write ADDRESS/LENGTH, e.g. 10.99.0.0/16 or fd00:99::/64"
            case .lengthOutOfRange(let text, let maximum):
                "'\(text)': the prefix length must be 0 to \(maximum)"
            case .hostBitsSet(let text, let proper):
                "'\(text)' has bits set past its length; write \(proper)"
            }
        }
    }

    /// A prefix whose address has no bits set past `length` (nil otherwise).
    public init?(_ address: IPAddress, length: Int) {
        guard length >= 0, length <= address.bitCount, address.masked(to: length) == address else { return nil }
        self.address = address
        self.length = length
    }

    /// Parses ADDRESS/LENGTH; an address with bits past the length is an error naming the right form.
    public init(parsing text: String) throws(ParseError) {
        guard let (address, length) = Self.addressAndLength(text) else { throw .malformed(text) }
        guard length <= address.bitCount else { throw .lengthOutOfRange(text, maximum: address.bitCount) }
        let masked = address.masked(to: length)
        guard masked == address else { throw .hostBitsSet(text, proper: IPPrefix(masked, length: length)!) }
        self.address = address
        self.length = length
    }

    /// ADDRESS/LENGTH split and read (the length one to three decimal digits, not checked
    /// against the family); nil when the text is not of that form. Shared with `InterfaceAddress`.
    static func addressAndLength(_ text: String) -> (IPAddress, Int)? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPAddress(String(parts[0])),
              !parts[1].isEmpty, parts[1].allSatisfy(\.isASCII), parts[1].allSatisfy(\.isNumber), parts[1].count <= 3,
              let length = Int(parts[1])
        else { return nil }
        return (address, length)
    }

    /// Whether `a` lies inside (an address of the other family never does).
    @inlinable
    public func contains(_ a: IPAddress) -> Bool {
        switch (address, a) {
        case (.v4, .v4), (.v6, .v6): a.masked(to: length) == address
        default: false
        }
    }

    public var description: String { "\(address)/\(length)" }
}

extension IPAddress {
    /// 32 or 128.
    public var bitCount: Int { isIPv6 ? 128 : 32 }

    /// The address with every bit past the first `length` cleared.
    @inlinable
    public func masked(to length: Int) -> IPAddress {
        switch self {
        case .v4(let a):
            let mask: UInt32 = length <= 0 ? 0 : length >= 32 ? .max : ~(UInt32.max >> UInt32(length))
            return .v4(IPv4Address(value: a.value & mask))
        case .v6(let a):
            func mask(_ bits: Int) -> UInt64 { bits <= 0 ? 0 : bits >= 64 ? .max : ~(UInt64.max >> UInt64(bits)) }
            return .v6(IPv6Address(high: a.high & mask(length), low: a.low & mask(length - 64)))
        }
    }
}

/// An interface's address with the length of its network's prefix, as `ip addr add` takes it:
/// `172.18.0.1/16` is the address 172.18.0.1 on the network 172.18.0.0/16.
public struct InterfaceAddress: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let length: Int

    /// Why a text is not an interface address.
    public enum ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        case malformed(String)
        case lengthOutOfRange(String, maximum: Int)
        /// The network's own address (or, for IPv4, its broadcast address), which no interface
        /// is given: `example` is the first host address.
        case notAHostAddress(String, example: String)

        public var description: String {
            switch self {
            case .malformed(let text):
                "'\(text)' is not ADDRESS/LENGTH; write the bridge's own address and its network's length, e.g. 172.18.0.1/16"
            case .lengthOutOfRange(let text, let maximum):
                "'\(text)': the prefix length must be 0 to \(maximum)"
            case .notAHostAddress(let text, let example):
                "'\(text)' is the network's own address, not one an interface can hold; give the bridge's address, e.g. \(example)"
            }
        }
    }

    public init(parsing text: String) throws(ParseError) {
        guard let (address, length) = IPPrefix.addressAndLength(text) else { throw .malformed(text) }
        guard length <= address.bitCount else { throw .lengthOutOfRange(text, maximum: address.bitCount) }
        self.address = address
        self.length = length
        // On a network with room for hosts, the all-zeros (and for IPv4 all-ones) host part
        // is not an address a bridge takes.
        if length <= address.bitCount - 2 {
            let network = address.masked(to: length)
            if address == network || !address.isIPv6 && address == broadcast {
                let first: IPAddress = switch network {
                case .v4(let a): .v4(IPv4Address(value: a.value + 1))
                case .v6(let a): .v6(IPv6Address(high: a.high, low: a.low + 1))
                }
                throw .notAHostAddress(text, example: "\(first)/\(length)")
            }
        }
    }

    public init?(_ address: IPAddress, length: Int) {
        guard length >= 0, length <= address.bitCount else { return nil }
        self.address = address
        self.length = length
    }

    /// The network: `172.18.0.0/16` for `172.18.0.1/16`.
    public var prefix: IPPrefix { IPPrefix(address.masked(to: length), length: length)! }

    /// IPv4's all-ones host part.
    var broadcast: IPAddress? {
        guard case .v4(let a) = address else { return nil }
        let hostBits: UInt32 = length == 0 ? .max : (UInt32(1) << UInt32(32 - length)) &- 1
        return .v4(IPv4Address(value: a.value | hostBits))
    }

    public var description: String { "\(address)/\(length)" }
}
