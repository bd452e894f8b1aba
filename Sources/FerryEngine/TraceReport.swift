import FerryWire

/// Which way a traced frame goes through the data path.
public enum TraceDirection: Sendable, Equatable {
    /// From the bridge: a frame the TAP hands over.
    case egress
    /// From the tunnel. `from`: the outer source address, with the bytes the inner frame (its
    /// VNI or GRE key `tunnelID`, nil: this tunnel's; the outer ECN field `outerECN`); nil: the
    /// bytes are a whole outer frame (Ethernet, IP, UDP/VXLAN or GRE), as a capture holds it.
    case ingress(from: IPAddress?, tunnelID: UInt32?, outerECN: UInt8)
}

/// What the data path would do with one frame (`Engine.trace`, `ferry ctl trace`): each decision
/// on its way, in order, and the verdict it ends in. Made from the running engine's state by the
/// same decision functions the workers act on (`Worker+Decisions.swift`), without sending,
/// learning or counting anything.
public struct TraceReport: Codable, Sendable, Equatable {
    /// One decision: which (`stage`), what it said (`result`), and what it was made from.
    public struct Step: Codable, Sendable, Equatable {
        public var stage: String
        public var result: String
        public var details: [String]

        public init(_ stage: String, _ result: String, _ details: [String] = []) {
            self.stage = stage
            self.result = result
            self.details = details
        }
    }

    /// How the walk ended.
    public enum Outcome: String, Codable, Sendable {
        /// Encapsulated to one peer (`peers`).
        case sent
        /// Encapsulated to every peer in `peers`.
        case flooded
        /// Written to the TAP, so to the bridge.
        case delivered
        /// Refused by the data path, counted under `dropReason`.
        case dropped
        /// Never reaches Ferry: the kernel would not hand it to its sockets (another port or
        /// protocol, another address); no counter moves.
        case notReceived = "not_received"
    }

    /// "egress" or "ingress".
    public var direction: String
    /// Bytes of the frame (or outer packet) traced.
    public var length: Int
    public var steps: [Step] = []
    public var outcome: Outcome = .dropped
    /// The peers it goes to, or (ingress) comes from.
    public var peers: [String] = []
    /// The drop reason's name, as `ferry ctl stats` prints it.
    public var dropReason: String?
    /// The verdict in words: "sent to 10.99.0.2", "flooded to [10.99.0.2, 10.99.0.3]",
    /// "delivered to the bridge", "dropped: unexpected_vni".
    public var verdict: String = ""

    public init(direction: String, length: Int) {
        self.direction = direction
        self.length = length
    }

    mutating func add(_ stage: String, _ result: String, _ details: [String] = []) {
        steps.append(Step(stage, result, details))
    }

    mutating func drop(_ reason: DropReason) {
        outcome = .dropped
        dropReason = reason.name
        verdict = "dropped: \(reason.name)"
    }

    mutating func end(_ outcome: Outcome, peers: [String] = [], _ verdict: String) {
        self.outcome = outcome
        self.peers = peers
        self.verdict = verdict
    }

    /// The report as `ferry ctl trace` prints it: one decision a line, what it was made from
    /// indented under it, the verdict last.
    public var text: String {
        var out = "trace \(direction), \(length) bytes\n"
        for s in steps {
            out += "\(s.stage): \(s.result)\n"
            for d in s.details { out += "    \(d)\n" }
        }
        out += "verdict: \(verdict)\n"
        return out
    }
}
