import FerryWire
import Foundation

/// `/run/ferry/subnet.env`, as flannel's `subnet.env`: the subnet this host holds, for Docker's
/// `--bip` and `--mtu` (or a CNI plugin) to use.
///
///     FERRY_NETWORK=10.16.0.0/12
///     FERRY_SUBNET=10.16.3.1/24
///     FERRY_MTU=1450
///
/// A restarted Ferry reads it back (`previousSubnet`) and asks for the same subnet first.
public struct SubnetEnv: Sendable, Equatable {
    public static let defaultPath = "/run/ferry/subnet.env"

    /// The cluster range (none: a subnet configured by hand, no range).
    public var network: IPPrefix?
    /// The bridge's address in the subnet held (its first host address) and the length.
    public var subnet: InterfaceAddress
    /// The TAP's MTU: what containers on the bridge should use.
    public var mtu: Int

    public init(network: IPPrefix?, subnet: InterfaceAddress, mtu: Int) {
        self.network = network
        self.subnet = subnet
        self.mtu = mtu
    }

    public var text: String {
        (network.map { "FERRY_NETWORK=\($0)\n" } ?? "") + "FERRY_SUBNET=\(subnet)\nFERRY_MTU=\(mtu)\n"
    }

    /// Writes the file (to a temporary, renamed over the old one).
    public func write(to path: String = SubnetEnv.defaultPath) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let temporary = path + ".tmp"
        try Data(text.utf8).write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path) == 0 else { throw MembershipError("cannot write \(path): \(String(cString: strerror(errno)))") }
    }

    /// The subnet a file written earlier names (nil: no file, or none in it).
    public static func previousSubnet(at path: String = SubnetEnv.defaultPath) -> IPPrefix? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where line.hasPrefix("FERRY_SUBNET=") {
            return (try? InterfaceAddress(parsing: String(line.dropFirst("FERRY_SUBNET=".count))))?.prefix
        }
        return nil
    }
}
