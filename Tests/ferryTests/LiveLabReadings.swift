import Foundation

// What the live tests read back: `ferry ctl --json` (decoded from its documented shape, as a
// script would, never through Ferry's own types), ping's summary, and a TCP transfer's result.

/// `ferry ctl --json stats`: counters by name, drops by reason name, one entry per peer, one
/// per worker. A name the test asks for and the document lacks throws, so that a renamed
/// counter fails the test instead of reading as 0.
struct CtlStats: Decodable, CustomStringConvertible {
    struct Peer: Decodable {
        var address: String
        var learned: Bool
        /// Absent from an older Ferry: read as not retired.
        var retired: Bool?
        var txPackets: UInt64
        var txBytes: UInt64
        var rxPackets: UInt64
        var rxBytes: UInt64
        /// GRE's link path: "device MAC", absent on the IP path.
        var linkPath: String?
    }

    /// What each worker thread moved.
    struct Worker: Decodable {
        var tapRxFrames: UInt64
        var tapTxFrames: UInt64
        var sentPackets: UInt64
        var receivedPackets: UInt64
    }

    var counters: [String: UInt64]
    var drops: [String: UInt64]
    var peers: [Peer]
    var fdbEntries: Int
    var workers: [Worker]
    /// The underlay MTU in use (absent from an older Ferry).
    var underlayMTU: Int?
    /// The routes set-up installed (absent without set-up).
    var hostRoutes: [String]?

    struct MissingName: Error, CustomStringConvertible {
        var name: String
        var description: String
    }

    /// A counter that must exist.
    func counter(_ name: String) throws -> UInt64 {
        guard let v = counters[name] else {
            throw MissingName(name: name, description: "no counter '\(name)' in \(counters.keys.sorted())")
        }
        return v
    }

    /// A drop reason that must exist.
    func drop(_ name: String) throws -> UInt64 {
        guard let v = drops[name] else {
            throw MissingName(name: name, description: "no drop reason '\(name)' in \(drops.keys.sorted())")
        }
        return v
    }

    func peer(_ address: String) -> Peer? { peers.first { Live.sameAddress($0.address, address) } }

    /// Packets sent to and received from a peer; 0 for an address that is no peer (yet).
    func tx(_ address: String) -> UInt64 { peer(address)?.txPackets ?? 0 }
    func rx(_ address: String) -> UInt64 { peer(address)?.rxPackets ?? 0 }

    /// Drop reasons that counted something, except those named.
    func drops(except allowed: Set<String> = []) -> [String: UInt64] {
        drops.filter { $0.value > 0 && !allowed.contains($0.key) }
    }

    var totalDrops: UInt64 { drops.values.reduce(0, +) }

    var description: String {
        let c = counters.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let d = drops(except: []).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let p = peers.map { p in
            "\(p.address)\(p.learned ? " (learned)" : "")\(p.retired == true ? " (retired)" : "") "
                + "tx \(p.txPackets)/\(p.txBytes) rx \(p.rxPackets)/\(p.rxBytes)"
        }
        return "counters [\(c.joined(separator: " "))] drops [\(d.joined(separator: " "))] peers [\(p.joined(separator: "; "))] fdb \(fdbEntries)"
    }
}

/// One entry of `ferry ctl --json fdb`.
struct CtlFDBEntry: Decodable {
    var mac: String
    var peer: String
    var ageSeconds: Int64
    var isStatic: Bool
}

extension Array where Element == CtlFDBEntry {
    /// The peer a MAC is learnt behind, if any.
    func peer(of mac: String) -> String? { first { $0.mac.lowercased() == mac.lowercased() }?.peer }
}

/// What ping reported: its exit status (nil when read from a log) and its summary line,
/// "N packets transmitted, M received, [+D duplicates, ][+E errors, ]L% packet loss", parsed.
struct PingResult: CustomStringConvertible {
    /// stdout then stderr: ping prints "local error: message too long" on stderr.
    var output: String
    var status: Int32?
    var transmitted = 0
    var received = 0
    var errors = 0
    /// "min/avg/max/mdev" in ms, when there was a reply.
    var rtt: String?

    init(output: String, status: Int32? = nil) {
        self.output = output
        self.status = status
        let lines = output.split(separator: "\n")
        if let summary = lines.last(where: { $0.contains(" packets transmitted, ") }) {
            for part in summary.split(separator: ",") {
                let words = part.split(separator: " ")
                guard let first = words.first, let n = Int(first.drop { $0 == "+" }) else { continue }
                switch words.dropFirst().first {
                case "packets": transmitted = n
                case "received": received = n
                case "errors": errors = n
                default: break
                }
            }
        }
        if let line = lines.first(where: { $0.hasPrefix("rtt ") }), let eq = line.firstIndex(of: "=") {
            rtt = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
        }
    }

    var description: String {
        "exit \(status.map(String.init) ?? "?"), \(transmitted) sent, \(received) received, \(errors) errors:\n\(output)"
    }

    /// Every echo answered (and, when the exit status is known, ping said so too).
    var allReceived: Bool { (status ?? 0) == 0 && transmitted > 0 && received == transmitted }
}

struct TransferResult: CustomStringConvertible {
    var bytes: Int
    var receivedBytes: Int
    var sentSHA256: String
    var receivedSHA256: String
    var seconds: Double
    var description: String {
        "\(receivedBytes) of \(bytes) bytes in \(String(format: "%.2f", seconds)) s, sha256 sent \(sentSHA256) received \(receivedSHA256)"
    }
}
