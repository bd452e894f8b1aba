import FerryWire
import Foundation

/// One packet as a firewall chain would see it: what the doctor asks a ruleset about (a peer's
/// tunnel packet arriving, a bridged frame being forwarded). A field left nil is unknown: a rule
/// that tests it cannot be decided unless another of its tests already fails.
public struct FirewallPacket: Sendable {
    public var ipv6: Bool
    /// IP protocol number (17 UDP, 47 GRE, 6 TCP).
    public var protocolNumber: UInt8
    public var destinationPort: UInt16?
    public var source: IPAddress?
    public var destination: IPAddress?
    public var inInterface: String?
    public var outInterface: String?

    public init(ipv6: Bool, protocolNumber: UInt8, destinationPort: UInt16? = nil, source: IPAddress? = nil,
                destination: IPAddress? = nil, inInterface: String? = nil, outInterface: String? = nil) {
        self.ipv6 = ipv6
        self.protocolNumber = protocolNumber
        self.destinationPort = destinationPort
        self.source = source
        self.destination = destination
        self.inInterface = inInterface
        self.outInterface = outInterface
    }

    public var protocolName: String {
        switch protocolNumber {
        case 6: "tcp"
        case 17: "udp"
        case 47: "gre"
        default: "protocol \(protocolNumber)"
        }
    }

    /// Tunnel packets are new to conntrack: each direction has its own source port (VXLAN) and
    /// a peer's packets are not replies to ours.
    static let connectionState = "new"
}

/// What a ruleset does with a packet.
public enum FirewallVerdict: Equatable, Sendable {
    /// Accepted, by `rule` (nil: by a chain's policy, or no chain hooked there).
    case accepted(rule: String?)
    /// Dropped by `rule`; `chain` is the base chain to put an accepting rule in front of
    /// ("INPUT", or nftables' "inet fw input").
    case dropped(rule: String, chain: String)
    /// A rule that could decide uses something the doctor does not evaluate.
    case undecided(rule: String, reason: String)
}

enum Tristate {
    case yes, no, unknown(String)

    static func all(_ parts: [Tristate]) -> Tristate {
        var unknown: String?
        for p in parts {
            switch p {
            case .no: return .no
            case .unknown(let why): unknown = unknown ?? why
            case .yes: break
            }
        }
        return unknown.map { .unknown($0) } ?? .yes
    }

    func negated(_ yes: Bool) -> Tristate {
        guard !yes else { return self }
        switch self {
        case .yes: return .no
        case .no: return .yes
        case .unknown: return self
        }
    }
}

enum Protocols {
    static func number(_ name: String) -> UInt8? {
        switch name.lowercased() {
        case "tcp": 6
        case "udp": 17
        case "gre": 47
        case "icmp": 1
        case "ipv6-icmp", "icmpv6": 58
        case "esp": 50
        case "sctp": 132
        default: UInt8(name)
        }
    }

    /// An interface name against an iptables/nft pattern (a trailing `+` or `*` is a wildcard).
    static func interface(_ name: String?, matches pattern: String) -> Tristate {
        guard let name else { return .unknown("the interface is not known") }
        if pattern.hasSuffix("+") || pattern.hasSuffix("*") { return name.hasPrefix(String(pattern.dropLast())) ? .yes : .no }
        return name == pattern ? .yes : .no
    }

    static func address(_ address: IPAddress?, in text: String) -> Tristate {
        guard let address else { return .unknown("the address is not known") }
        var any = false
        for part in text.split(separator: ",") {
            let s = String(part)
            if let prefix = prefix(s) {
                if prefix.contains(address) { return .yes }
                any = true
            } else {
                return .unknown("address '\(s)' is a name, not an address")
            }
        }
        return any ? .no : .unknown("no address in '\(text)'")
    }

    /// ADDRESS[/LENGTH], host bits allowed (they are masked off, as the kernel does).
    static func prefix(_ text: String) -> IPPrefix? {
        let parts = text.split(separator: "/")
        guard let first = parts.first, let address = IPAddress(String(first)) else { return nil }
        let bits = address.isIPv6 ? 128 : 32
        guard let length = parts.count > 1 ? Int(parts[1]) : bits, (0...bits).contains(length) else { return nil }
        return IPPrefix(address.masked(to: length), length: length)
    }

    static func port(_ port: UInt16?, in text: String) -> Tristate {
        guard let port else { return .unknown("the port is not known") }
        for part in text.split(separator: ",") {
            let bounds = part.split(separator: ":", omittingEmptySubsequences: false).map { UInt16($0) }
            if bounds.contains(where: { $0 == nil }) && !(bounds.count == 2 && (part.hasPrefix(":") || part.hasSuffix(":"))) {
                return .unknown("port '\(part)' is a service name")
            }
            if bounds.count == 1, bounds[0] == port { return .yes }
            if bounds.count == 2 {
                let low = bounds[0] ?? 0, high = bounds[1] ?? UInt16.max
                if low <= port && port <= high { return .yes }
            }
        }
        return .no
    }
}

// MARK: - iptables-save

/// The filter table of `iptables-save` output, evaluated for one packet in one base chain
/// (INPUT, FORWARD), as x_tables does: rules in order, jumps into user chains, RETURN, the
/// chain's policy at its end.
public struct IptablesRuleset: Sendable {
    struct Rule: Sendable {
        var text: String
        var tokens: [String]
    }

    var policies: [String: String] = [:]
    var chains: [String: [Rule]] = [:]

    public init(save text: String, table: String = "filter") {
        var inTable = false
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("*") { inTable = line.dropFirst() == table; continue }
            guard inTable, !line.hasPrefix("#") else { continue }
            if line == "COMMIT" { inTable = false; continue }
            if line.hasPrefix(":") {
                let parts = line.dropFirst().split(separator: " ")
                if parts.count >= 2 {
                    policies[String(parts[0])] = String(parts[1])
                    chains[String(parts[0]), default: []] += []
                }
            } else if line.hasPrefix("-A ") {
                var tokens = Self.tokenize(line)
                guard tokens.count >= 2 else { continue }
                let chain = tokens[1]
                tokens.removeFirst(2)
                chains[chain, default: []].append(Rule(text: line, tokens: tokens))
            }
        }
    }

    /// Whether the table has the chain at all.
    public func has(chain: String) -> Bool { chains[chain] != nil }

    public func policy(of chain: String) -> String? { policies[chain] }

    public func verdict(for packet: FirewallPacket, chain: String) -> FirewallVerdict {
        switch run(chain, packet, depth: 0) {
        case .accept(let rule): return .accepted(rule: rule)
        case .drop(let rule): return .dropped(rule: rule, chain: chain)
        case .undecided(let rule, let why): return .undecided(rule: rule, reason: why)
        case .fallThrough:
            let policy = policies[chain] ?? "ACCEPT"
            return policy == "DROP" ? .dropped(rule: "the \(chain) chain's policy DROP (iptables -P \(chain) DROP)", chain: chain) : .accepted(rule: nil)
        }
    }

    enum Outcome { case accept(String), drop(String), undecided(String, String), fallThrough }

    func run(_ chain: String, _ packet: FirewallPacket, depth: Int) -> Outcome {
        guard depth < 32 else { return .undecided(chain, "chains nest deeper than 32") }
        for rule in chains[chain] ?? [] {
            let (match, target, goto) = evaluate(rule.tokens, packet)
            guard let target else { continue }
            let terminal: Outcome?
            switch target {
            case "ACCEPT": terminal = .accept(rule.text)
            case "DROP", "REJECT": terminal = .drop(rule.text)
            case "RETURN":
                terminal = nil
                if case .yes = match { return .fallThrough }
                if case .unknown(let why) = match { return .undecided(rule.text, why) }
                continue
            case "LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CT", "TRACE", "AUDIT", "CLASSIFY", "DSCP", "TOS", "TCPMSS", "NOTRACK":
                continue
            default:
                guard chains[target] != nil else {
                    if case .no = match { continue }
                    return .undecided(rule.text, "target \(target) is not one the doctor evaluates")
                }
                switch match {
                case .no: continue
                case .unknown(let why): return .undecided(rule.text, why)
                case .yes:
                    let inner = run(target, packet, depth: depth + 1)
                    if case .fallThrough = inner {
                        if goto { return .fallThrough }
                        continue
                    }
                    return inner
                }
            }
            switch match {
            case .yes: return terminal!
            case .no: continue
            case .unknown(let why): return .undecided(rule.text, why)
            }
        }
        return .fallThrough
    }

    /// Whether a rule's tests match, and its target (nil: none, a counting rule).
    func evaluate(_ tokens: [String], _ packet: FirewallPacket) -> (Tristate, String?, Bool) {
        var tests: [Tristate] = []
        var target: String?
        var goto = false
        var negate = false
        var inTarget = false
        var i = 0
        func next() -> String { i += 1; return i < tokens.count ? tokens[i] : "" }
        while i < tokens.count {
            let t = tokens[i]
            if t == "!" { negate = true; i += 1; continue }
            if inTarget { i += 1; continue }  // the target's own options
            var test: Tristate?
            switch t {
            case "-p", "--protocol":
                let name = next()
                if name == "all" { test = .yes } else if let n = Protocols.number(name) {
                    test = n == packet.protocolNumber ? .yes : .no
                } else { test = .unknown("protocol '\(name)'") }
            case "-s", "--source": test = Protocols.address(packet.source, in: next())
            case "-d", "--destination": test = Protocols.address(packet.destination, in: next())
            case "-i", "--in-interface": test = Protocols.interface(packet.inInterface, matches: next())
            case "-o", "--out-interface": test = Protocols.interface(packet.outInterface, matches: next())
            case "--dport", "--destination-port", "--dports", "--destination-ports", "--ports":
                test = Protocols.port(packet.destinationPort, in: next())
            case "--ctstate", "--state":
                test = next().lowercased().split(separator: ",").contains(Substring(FirewallPacket.connectionState)) ? .yes : .no
            case "-m", "--match":
                let module = next()
                if !["udp", "tcp", "multiport", "conntrack", "state", "comment", "limit", "addrtype", "pkttype"].contains(module) {
                    test = .unknown("match module '\(module)'")
                }
            case "--comment": _ = next()
            case "--limit", "--limit-burst": _ = next()
            case "--dst-type":
                let type = next()
                test = type == "LOCAL" ? (packet.outInterface == nil ? .yes : .no) : .unknown("address type \(type)")
            case "--pkt-type":
                test = next() == "unicast" ? .yes : .no
            case "-f", "--fragment": test = .no
            case "-j", "--jump", "-g", "--goto":
                goto = t == "-g" || t == "--goto"
                target = next()
                inTarget = true
            case "-c": _ = next(); _ = next()
            default:
                if t.hasPrefix("-") {
                    test = .unknown("option '\(t)'")
                    // skip its argument, if any
                    if i + 1 < tokens.count, !tokens[i + 1].hasPrefix("-") { i += 1 }
                }
            }
            if let test { tests.append(test.negated(!negate)) }
            negate = false
            i += 1
        }
        return (Tristate.all(tests), target, goto)
    }

    /// Splits an iptables-save line into words, keeping "double-quoted strings" whole.
    static func tokenize(_ line: String) -> [String] {
        var tokens: [String] = []
        var current = ""
        var quoted = false
        var escaped = false
        for c in line {
            if escaped { current.append(c); escaped = false; continue }
            if c == "\\" && quoted { escaped = true; continue }
            if c == "\"" { quoted.toggle(); continue }
            if c == " " && !quoted {
                if !current.isEmpty { tokens.append(current); current = "" }
                continue
            }
            current.append(c)
        }
        if !current.isEmpty { tokens.append(current) }
        return tokens
    }
}

// MARK: - nftables

/// `nft -j list ruleset`, evaluated for one packet at one hook (input, forward): every base
/// chain of the packet's family (ip or ip6, and inet) hooked there, in priority order. A drop
/// anywhere is final; an accept ends only its own base chain.
public struct NftablesRuleset: Sendable {
    struct Chain: Sendable {
        var family: String
        var table: String
        var name: String
        var hook: String?
        var priority: Int
        var policy: String
    }

    struct Rule: @unchecked Sendable {
        var text: String
        var expressions: [[String: Any]]
    }

    var chains: [Chain] = []
    var rules: [String: [Rule]] = [:]  // "family table chain"

    public enum ParseError: Error, CustomStringConvertible {
        case notJSON(String)
        public var description: String {
            switch self {
            case .notJSON(let why): "nft -j output is not the JSON expected: \(why)"
            }
        }
    }

    public init(json text: String) throws(ParseError) {
        guard let root = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let items = root["nftables"] as? [[String: Any]]
        else { throw .notJSON("no top-level \"nftables\" array") }
        for item in items {
            if let c = item["chain"] as? [String: Any] {
                chains.append(Chain(family: c["family"] as? String ?? "", table: c["table"] as? String ?? "",
                                    name: c["name"] as? String ?? "", hook: c["hook"] as? String,
                                    priority: (c["prio"] as? NSNumber)?.intValue ?? 0, policy: c["policy"] as? String ?? "accept"))
            } else if let r = item["rule"] as? [String: Any] {
                let key = "\(r["family"] as? String ?? "") \(r["table"] as? String ?? "") \(r["chain"] as? String ?? "")"
                let expressions = (r["expr"] as? [[String: Any]]) ?? []
                let text = "\(r["family"] as? String ?? "") \(r["table"] as? String ?? "") \(r["chain"] as? String ?? ""): "
                    + expressions.map(Self.describe).filter { !$0.isEmpty }.joined(separator: " ")
                rules[key, default: []].append(Rule(text: text, expressions: expressions))
            }
        }
    }

    /// Whether any base chain is hooked at `hook` for the packet's family.
    public func hasChains(hook: String, ipv6: Bool) -> Bool { !baseChains(hook: hook, ipv6: ipv6).isEmpty }

    func baseChains(hook: String, ipv6: Bool) -> [Chain] {
        chains.filter { $0.hook == hook && ($0.family == "inet" || $0.family == (ipv6 ? "ip6" : "ip")) }
            .sorted { $0.priority < $1.priority }
    }

    /// The verdict at `hook`, leaving out the tables `skipTables` names ("ip filter": tables an
    /// iptables evaluation already covers).
    public func verdict(for packet: FirewallPacket, hook: String, skipTables: Set<String> = []) -> FirewallVerdict {
        var acceptedBy: String?
        for chain in baseChains(hook: hook, ipv6: packet.ipv6) where !skipTables.contains("\(chain.family) \(chain.table)") {
            switch run(chain, packet, depth: 0) {
            case .accept(let rule): acceptedBy = acceptedBy ?? rule
            case .drop(let rule): return .dropped(rule: rule, chain: "\(chain.family) \(chain.table) \(chain.name)")
            case .undecided(let rule, let why): return .undecided(rule: rule, reason: why)
            case .fallThrough:
                if chain.policy == "drop" {
                    return .dropped(rule: "the policy drop of chain \(chain.family) \(chain.table) \(chain.name) (hook \(hook))",
                                    chain: "\(chain.family) \(chain.table) \(chain.name)")
                }
            }
        }
        return .accepted(rule: acceptedBy)
    }

    enum Outcome { case accept(String), drop(String), undecided(String, String), fallThrough }

    func run(_ chain: Chain, _ packet: FirewallPacket, depth: Int) -> Outcome {
        guard depth < 32 else { return .undecided(chain.name, "chains nest deeper than 32") }
        for rule in rules["\(chain.family) \(chain.table) \(chain.name)"] ?? [] {
            var tests: [Tristate] = []
            var outcome: Outcome?
            var jumpTo: (String, Bool)?
            var returns = false
            for e in rule.expressions {
                guard let (key, value) = e.first else { continue }
                switch key {
                case "match": tests.append(Self.match(value as? [String: Any] ?? [:], packet))
                case "accept": outcome = .accept(rule.text)
                case "drop", "reject": outcome = .drop(rule.text)
                case "jump", "goto":
                    if let target = (value as? [String: Any])?["target"] as? String { jumpTo = (target, key == "goto") }
                case "return": returns = true
                case "xt":
                    let xt = value as? [String: Any] ?? [:]
                    let name = xt["name"] as? String ?? "?"
                    if xt["type"] as? String == "target" {
                        if name == "REJECT" || name == "DROP" { outcome = .drop(rule.text) } else if name == "ACCEPT" { outcome = .accept(rule.text) }
                    } else {
                        tests.append(.unknown("iptables match '\(name)' (an xt expression)"))
                    }
                case "counter", "log", "limit", "comment", "mangle", "notrack", "quota", "meta": continue
                case "vmap", "verdict map": tests.append(.unknown("a verdict map"))
                default: tests.append(.unknown("expression '\(key)'"))
                }
            }
            let match = Tristate.all(tests)
            if outcome == nil && jumpTo == nil && !returns { continue }
            switch match {
            case .no: continue
            case .unknown(let why): return .undecided(rule.text, why)
            case .yes:
                if let outcome { return outcome }
                if returns { return .fallThrough }
                if let (target, goto) = jumpTo,
                   let next = chains.first(where: { $0.family == chain.family && $0.table == chain.table && $0.name == target }) {
                    let inner = run(next, packet, depth: depth + 1)
                    if case .fallThrough = inner {
                        if goto { return .fallThrough }
                        continue
                    }
                    return inner
                }
            }
        }
        return .fallThrough
    }

    static func match(_ m: [String: Any], _ packet: FirewallPacket) -> Tristate {
        let op = m["op"] as? String ?? "=="
        let negate = op == "!="
        guard let left = m["left"] as? [String: Any], let right = m["right"] else { return .unknown("a match without operands") }
        let result: Tristate
        if let payload = left["payload"] as? [String: Any] {
            let proto = payload["protocol"] as? String ?? ""
            let field = payload["field"] as? String ?? ""
            switch (proto, field) {
            case ("udp", "dport"), ("tcp", "dport"), ("th", "dport"):
                let carries = proto == "th" ? (packet.protocolNumber == 6 || packet.protocolNumber == 17) : Protocols.number(proto) == packet.protocolNumber
                // `udp dport` implies the protocol: a GRE packet never matches, even under !=.
                guard carries else { return .no }
                result = values(right).map { vs in
                    vs.contains { v in Self.port(packet.destinationPort, v) } ? Tristate.yes : .no
                } ?? .unknown("a port set by name")
            case ("udp", "sport"), ("tcp", "sport"), ("th", "sport"):
                let carries = proto == "th" ? (packet.protocolNumber == 6 || packet.protocolNumber == 17) : Protocols.number(proto) == packet.protocolNumber
                guard carries else { return .no }
                result = .unknown("the source port (a VXLAN sender picks it per flow)")
            case ("ip", "protocol"), ("ip6", "nexthdr"):
                guard (proto == "ip6") == packet.ipv6 else { return .no }
                result = protocolTest(right, packet)
            case ("ip", "saddr"), ("ip6", "saddr"):
                guard (proto == "ip6") == packet.ipv6 else { return .no }
                result = addressTest(right, packet.source)
            case ("ip", "daddr"), ("ip6", "daddr"):
                guard (proto == "ip6") == packet.ipv6 else { return .no }
                result = addressTest(right, packet.destination)
            default: return .unknown("payload \(proto) \(field)")
            }
        } else if let meta = left["meta"] as? [String: Any], let key = meta["key"] as? String {
            switch key {
            case "l4proto": result = protocolTest(right, packet)
            case "iifname", "iif": result = nameTest(right, packet.inInterface)
            case "oifname", "oif": result = nameTest(right, packet.outInterface)
            case "nfproto":
                result = values(right).map { $0.contains { "\($0)" == (packet.ipv6 ? "ipv6" : "ipv4") } ? Tristate.yes : .no } ?? .unknown("nfproto")
            case "pkttype": result = values(right).map { $0.contains { "\($0)" == "host" || "\($0)" == "unicast" } ? Tristate.yes : .no } ?? .unknown("pkttype")
            default: return .unknown("meta \(key)")
            }
        } else if let ct = left["ct"] as? [String: Any], ct["key"] as? String == "state" {
            let states = values(right)?.map { "\($0)" } ?? []
            let hit = states.contains(FirewallPacket.connectionState)
            // `ct state established,related` with op "in" (flags) or "==".
            return (negate ? !hit : hit) ? .yes : .no
        } else if let fib = left["fib"] as? [String: Any] {
            return .unknown("a fib lookup (\(fib["result"] as? String ?? "?"))")
        } else {
            return .unknown("a match on \(left.keys.sorted().joined(separator: ","))")
        }
        return result.negated(!negate)
    }

    /// The values a right-hand side stands for (a scalar, a set, a list), nil for what the
    /// doctor cannot read (a named set).
    static func values(_ right: Any) -> [Any]? {
        if let s = right as? String { return s.hasPrefix("@") ? nil : [s] }
        if let n = right as? NSNumber { return [n] }
        if let a = right as? [Any] { return a }
        if let d = right as? [String: Any] {
            if let set = d["set"] as? [Any] { return set }
            if d["range"] != nil || d["prefix"] != nil { return [d] }
        }
        return nil
    }

    static func port(_ port: UInt16?, _ value: Any) -> Bool {
        guard let port else { return false }
        if let n = value as? NSNumber { return n.intValue == Int(port) }
        if let d = value as? [String: Any], let range = d["range"] as? [NSNumber], range.count == 2 {
            return (range[0].intValue...max(range[0].intValue, range[1].intValue)).contains(Int(port))
        }
        return false
    }

    static func protocolTest(_ right: Any, _ packet: FirewallPacket) -> Tristate {
        guard let vs = values(right) else { return .unknown("a protocol set by name") }
        return vs.contains { v in
            if let n = v as? NSNumber { return n.intValue == Int(packet.protocolNumber) }
            return (v as? String).flatMap(Protocols.number) == packet.protocolNumber
        } ? .yes : .no
    }

    static func addressTest(_ right: Any, _ address: IPAddress?) -> Tristate {
        guard let address else { return .unknown("the address is not known") }
        guard let vs = values(right) else { return .unknown("an address set by name") }
        for v in vs {
            if let s = v as? String, let a = IPAddress(s), a == address { return .yes }
            if let d = v as? [String: Any], let p = d["prefix"] as? [String: Any], let a = p["addr"] as? String,
               let len = (p["len"] as? NSNumber)?.intValue, let prefix = Protocols.prefix("\(a)/\(len)"), prefix.contains(address) {
                return .yes
            }
            if let d = v as? [String: Any], let range = d["range"] as? [String], range.count == 2,
               let low = IPAddress(range[0]), let high = IPAddress(range[1]), low <= address && address <= high {
                return .yes
            }
        }
        return .no
    }

    static func nameTest(_ right: Any, _ name: String?) -> Tristate {
        guard let vs = values(right) else { return .unknown("an interface set by name") }
        var result = Tristate.no
        for v in vs {
            switch Protocols.interface(name, matches: "\(v)") {
            case .yes: return .yes
            case .unknown(let why): result = .unknown(why)
            case .no: break
            }
        }
        return result
    }

    /// A short readable form of one expression, for the rule named in a finding.
    static func describe(_ e: [String: Any]) -> String {
        guard let (key, value) = e.first else { return "" }
        switch key {
        case "match":
            guard let m = value as? [String: Any] else { return "match" }
            let left = m["left"].map(describeOperand) ?? "?"
            let right = m["right"].map(describeOperand) ?? "?"
            let op = m["op"] as? String ?? "=="
            return op == "==" || op == "in" ? "\(left) \(right)" : "\(left) \(op) \(right)"
        case "counter", "comment": return ""
        case "xt": return "xt \((value as? [String: Any])?["name"] as? String ?? "?")"
        case "jump", "goto": return "\(key) \((value as? [String: Any])?["target"] as? String ?? "?")"
        default: return key
        }
    }

    static func describeOperand(_ v: Any) -> String {
        if let d = v as? [String: Any] {
            if let p = d["payload"] as? [String: Any] { return "\(p["protocol"] ?? "") \(p["field"] ?? "")" }
            if let m = d["meta"] as? [String: Any] { return "meta \(m["key"] ?? "")" }
            if let c = d["ct"] as? [String: Any] { return "ct \(c["key"] ?? "")" }
            if let s = d["set"] as? [Any] { return "{ " + s.map(describeOperand).joined(separator: ", ") + " }" }
            if let p = d["prefix"] as? [String: Any] { return "\(p["addr"] ?? "")/\(p["len"] ?? "")" }
            if let r = d["range"] as? [Any] { return r.map(describeOperand).joined(separator: "-") }
            return d.keys.sorted().joined(separator: ",")
        }
        if let a = v as? [Any] { return a.map(describeOperand).joined(separator: ",") }
        return "\(v)"
    }
}
