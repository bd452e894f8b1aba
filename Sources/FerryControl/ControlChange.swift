import FerryEngine
import FerryWire

/// A request that changes the running ferry (`ferry ctl peer|fdb add|del`, `ferry ctl reload`):
/// one line, as the queries (`ControlRequest`), of words separated by spaces. The answer is a
/// `ControlChangeReport`, or a refusal (`{"error":"…"}`) saying why nothing was done.
/// The control socket is root's (mode 0600): who may connect may change.
public enum ControlChange: Sendable, Equatable {
    /// `peer add ADDRESS[=SUBNET]`: a configured peer, and the container subnet behind it.
    case addPeer(IPAddress, subnet: IPPrefix?)
    /// `peer del ADDRESS`.
    case removePeer(IPAddress)
    /// `fdb add MAC PEER`: a static forwarding entry.
    case setEntry(MACAddress, peer: IPAddress)
    /// `fdb del MAC`: a static or learned entry.
    case removeEntry(MACAddress)
    /// `reload`: the config file read again, and what can change live applied.
    case reload

    /// The line a client sends.
    public var line: String {
        let words = switch self {
        case .addPeer(let a, let subnet): "peer add \(a)" + (subnet.map { "=\($0)" } ?? "")
        case .removePeer(let a): "peer del \(a)"
        case .setEntry(let mac, let peer): "fdb add \(mac) \(peer)"
        case .removeEntry(let mac): "fdb del \(mac)"
        case .reload: "reload"
        }
        return words + "\n"
    }

    /// The forms, as messages name them.
    static let forms = "peer add ADDRESS[=SUBNET], peer del ADDRESS, fdb add MAC PEER, fdb del MAC, reload"

    /// Parses a request line whose words make a change; nil for any other line (a query, or
    /// something the query parser refuses). A change with a wrong argument is refused here,
    /// with what is wrong.
    public init?(line: some StringProtocol) throws(ControlRequestError) {
        guard line.utf8.count <= ControlRequest.maximumLength else { return nil }
        let words = String(line).split(whereSeparator: { (c: Character) in c.isWhitespace }).map(String.init)
        guard let first = words.first else { return nil }
        switch (first, words.count > 1 ? words[1] : nil) {
        case ("reload", nil):
            self = .reload
        case ("peer", "add"):
            guard words.count == 3 else { throw .malformed("write peer add ADDRESS[=SUBNET], e.g. peer add 10.99.0.3=10.19.0.0/16") }
            let parts = words[2].split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let address = try Self.address(parts[0], "peer add")
            var subnet: IPPrefix? = nil
            if parts.count == 2 {
                do { subnet = try IPPrefix(parsing: parts[1]) } catch { throw .malformed("peer add: \(error)") }
            }
            self = .addPeer(address, subnet: subnet)
        case ("peer", "del"):
            guard words.count == 3 else { throw .malformed("write peer del ADDRESS") }
            self = .removePeer(try Self.address(words[2], "peer del"))
        case ("fdb", "add"):
            guard words.count == 4 else { throw .malformed("write fdb add MAC PEER, e.g. fdb add 02:42:0a:13:00:02 10.99.0.3") }
            self = .setEntry(try Self.mac(words[2], "fdb add"), peer: try Self.address(words[3], "fdb add"))
        case ("fdb", "del"):
            guard words.count == 3 else { throw .malformed("write fdb del MAC") }
            self = .removeEntry(try Self.mac(words[2], "fdb del"))
        case ("peer", _):
            throw .malformed("write peer add ADDRESS[=SUBNET] or peer del ADDRESS")
        default:
            return nil
        }
    }

    static func address(_ text: String, _ form: String) throws(ControlRequestError) -> IPAddress {
        guard let a = IPAddress(text) else {
            throw .malformed("\(form): '\(text)' is not an IP address; give a peer host's underlay address, e.g. 10.99.0.3")
        }
        return a
    }

    static func mac(_ text: String, _ form: String) throws(ControlRequestError) -> MACAddress {
        guard let m = MACAddress(text) else {
            throw .malformed("\(form): '\(text)' is not a MAC address; write six hex octets, e.g. 02:42:0a:13:00:02")
        }
        return m
    }
}

/// What a change did: each change made, each difference that needs a restart (a reload), each
/// part refused, in words. A change refused as a whole is a refusal instead.
public struct ControlChangeReport: Codable, Sendable, Equatable {
    public var applied: [String]
    public var needsRestart: [String]
    public var failed: [String]

    public init(applied: [String] = [], needsRestart: [String] = [], failed: [String] = []) {
        self.applied = applied
        self.needsRestart = needsRestart
        self.failed = failed
    }
}
