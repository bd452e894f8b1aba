import FerryEngine
import FerryWire

/// `ferry ctl trace`'s words: where the frame comes in and, unless its bytes are given
/// (`--hex`, `--pcap`), the frame itself as a flow, ofproto/trace style:
///
///     in=tap dst=02:00:00:00:00:01 src=02:00:00:00:00:02 ipv4 10.17.0.2>10.18.0.2 tcp 80
///     in=tunnel from=10.99.0.2 vni=42 ecn=ce dst=… src=… ipv6 fd00::2>fd00::1 udp 5000>53 len=200
///
/// `in=tap` (the default) traces egress; `in=tunnel from=ADDRESS` traces the frame as the inner
/// frame of a packet from ADDRESS (with `vni=N` or `key=N`: another VNI or key than the
/// tunnel's; `ecn=`: the outer ECN field); `in=tunnel` without `from=` takes the bytes given as
/// a whole outer frame (a capture's). Frame words: `dst=MAC` (required), `src=MAC`, `vlan=N`,
/// then `arp A>B`, `ipv4 A>B` or `ipv6 A>B`, then `tcp [SPORT>]DPORT`, `udp [SPORT>]DPORT` or
/// `icmp`, and `len=N` (the whole frame's length), `tos=N` (the inner TOS byte, ECN included),
/// `nodf`. `A>B` may also be written `A,B` (a shell takes an unquoted `>` as a redirection).
public struct TraceSpec: Sendable, Equatable {
    public var direction: TraceDirection
    /// The frame the words describe; nil when they describe none (its bytes come from elsewhere).
    public var frame: [UInt8]?

    /// The forms, as errors name them. (`A>B` may be written `A,B`: a shell takes an unquoted `>`.)
    public static let forms = """
        in=tap|tunnel [from=ADDRESS [vni=N|key=N] [ecn=not-ect|ect1|ect0|ce]] dst=MAC [src=MAC] [vlan=N] \
        [arp A>B | ipv4 A>B | ipv6 A>B [tcp|udp [SPORT>]DPORT | icmp]] [len=N] [tos=N] [nodf], \
        e.g. in=tap dst=02:00:00:00:00:01 ipv4 10.17.0.2>10.18.0.2 tcp 80
        """

    public static let defaultSource = MACAddress(0x02, 0, 0, 0, 0xEE, 0x01)

    public init(direction: TraceDirection, frame: [UInt8]?) {
        self.direction = direction
        self.frame = frame
    }

    /// Parses `words`; `hasBytes`: the frame's bytes are given apart (then no frame words).
    public init(words: [String], hasBytes: Bool) throws(TraceSpecError) {
        var tunnel = false
        var from: IPAddress?, id: UInt32?, ecn: UInt8 = 0
        var dst: MACAddress?, src = Self.defaultSource, vlan: UInt16?
        var network: (kind: String, source: IPAddress?, destination: IPAddress?)?
        var transport: (kind: String, source: UInt16, destination: UInt16)?
        var length: Int?, tos: UInt8 = 0, df = true
        var frameWords: [String] = []
        var i = 0
        func fail(_ what: String) -> TraceSpecError { TraceSpecError("\(what); write \(Self.forms)") }
        while i < words.count {
            let word = words[i]
            i += 1
            let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 {
                let (key, value) = (parts[0], parts[1])
                switch key {
                case "in":
                    switch value {
                    case "tap": tunnel = false
                    case "tunnel": tunnel = true
                    default: throw fail("in=\(value): give in=tap (from the bridge) or in=tunnel (from a peer)")
                    }
                    continue
                case "from":
                    guard let a = IPAddress(value) else { throw fail("from=\(value) is not an IP address") }
                    from = a
                    continue
                case "vni", "key":
                    guard let n = UInt32(value) else { throw fail("\(key)=\(value) is not a number") }
                    id = n
                    continue
                case "ecn":
                    let names: [String: UInt8] = ["not-ect": 0, "ect1": 1, "ect0": 2, "ce": 3, "0": 0, "1": 1, "2": 2, "3": 3]
                    guard let n = names[value.lowercased()] else { throw fail("ecn=\(value): give not-ect, ect1, ect0 or ce") }
                    ecn = n
                    continue
                case "dst", "src":
                    guard let mac = MACAddress(value) else { throw fail("\(key)=\(value) is not a MAC address (like 02:00:00:00:00:01)") }
                    if key == "dst" { dst = mac } else { src = mac }
                case "vlan":
                    guard let n = UInt16(value), n < 4095 else { throw fail("vlan=\(value) is not a VLAN ID (0-4094)") }
                    vlan = n
                case "len":
                    guard let n = Int(value), n >= 14, n <= 65535 else { throw fail("len=\(value) is not a frame length (14-65535)") }
                    length = n
                case "tos":
                    guard let n = value.hasPrefix("0x") ? UInt8(value.dropFirst(2), radix: 16) : UInt8(value) else {
                        throw fail("tos=\(value) is not a byte (0-255 or 0x00-0xff)")
                    }
                    tos = n
                default:
                    throw fail("unknown word '\(word)'")
                }
                frameWords.append(word)
                continue
            }
            frameWords.append(word)
            switch word {
            case "arp", "ipv4", "ipv6":
                guard network == nil else { throw fail("'\(word)': the frame has its network layer already") }
                var pair: (IPAddress, IPAddress)? = nil
                if i < words.count, words[i].contains(">") || words[i].contains(",") {
                    let sides = words[i].split(omittingEmptySubsequences: false, whereSeparator: { $0 == ">" || $0 == "," }).map(String.init)
                    guard sides.count == 2, let a = IPAddress(sides[0]), let b = IPAddress(sides[1]) else {
                        throw fail("'\(words[i])' is not SOURCE>DESTINATION addresses")
                    }
                    guard a.isIPv6 == b.isIPv6, (word == "ipv6") == a.isIPv6 else {
                        throw fail("'\(words[i])' are not both \(word == "ipv6" ? "IPv6" : "IPv4") addresses")
                    }
                    pair = (a, b)
                    frameWords.append(words[i])
                    i += 1
                } else if word != "arp" {
                    throw fail("\(word) needs SOURCE>DESTINATION addresses (quote the > in a shell, or write SOURCE,DESTINATION)")
                }
                network = (word, pair?.0, pair?.1)
            case "tcp", "udp":
                guard let n = network, n.kind != "arp" else { throw fail("'\(word)' needs ipv4 or ipv6 before it") }
                guard i < words.count else { throw fail("\(word) needs a port: [SPORT>]DPORT") }
                let sides = words[i].split(whereSeparator: { $0 == ">" || $0 == "," }).map(String.init)
                let ports = sides.compactMap { UInt16($0) }
                guard ports.count == sides.count, (1...2).contains(ports.count) else { throw fail("'\(words[i])' is not [SPORT>]DPORT") }
                transport = (word, ports.count == 2 ? ports[0] : 40000, ports.last!)
                frameWords.append(words[i])
                i += 1
            case "icmp":
                guard let n = network, n.kind != "arp" else { throw fail("'icmp' needs ipv4 or ipv6 before it") }
                transport = ("icmp", 0, 0)
            case "nodf":
                df = false
            default:
                throw fail("unknown word '\(word)'")
            }
        }
        if !tunnel, from != nil || id != nil || ecn != 0 {
            throw fail("from=, vni=, key= and ecn= describe a packet from the tunnel: add in=tunnel")
        }
        direction = tunnel ? .ingress(from: from, tunnelID: id, outerECN: ecn) : .egress
        if tunnel, from == nil, id != nil || ecn != 0 {
            throw fail("vni=, key= and ecn= go with from=ADDRESS; without from=, the bytes are a whole outer frame, which has its own")
        }
        if hasBytes {
            guard frameWords.isEmpty else {
                throw TraceSpecError("the frame is given as bytes (--hex or --pcap): leave out '\(frameWords.joined(separator: " "))'")
            }
            frame = nil
            return
        }
        if tunnel, from == nil { throw fail("in=tunnel with a described frame needs from=ADDRESS (the peer it comes from)") }
        guard let dst else { throw fail(frameWords.isEmpty ? "no frame: describe one, or give --hex or --pcap" : "the frame needs dst=MAC") }
        frame = Self.build(dst: dst, src: src, vlan: vlan, network: network, transport: transport, length: length, tos: tos, df: df)
    }

    /// The frame the words describe, every checksum right, padded with a byte pattern to `length`.
    static func build(dst: MACAddress, src: MACAddress, vlan: UInt16?, network: (kind: String, source: IPAddress?, destination: IPAddress?)?,
                      transport: (kind: String, source: UInt16, destination: UInt16)?, length: Int?, tos: UInt8, df: Bool) -> [UInt8] {
        func make(_ data: [UInt8], pad: Bool) -> [UInt8] {
            guard let network else {
                // No network layer: an IPv4 EtherType with the pattern behind it.
                return FrameBuilder.frame(destinationMAC: dst, sourceMAC: src, vlan: vlan, payload: .raw(etherType: EtherType.ipv4, data: data), pad: pad)
            }
            let s = network.source ?? .v4(IPv4Address(10, 0, 0, 1)), d = network.destination ?? .v4(IPv4Address(10, 0, 0, 2))
            let payload: FrameBuilder.Payload
            switch (network.kind, transport?.kind) {
            case ("arp", _):
                guard case .v4(let a) = s, case .v4(let b) = d else { preconditionFailure("checked by the parser") }
                payload = .arp(operation: 1, senderIP: a, targetIP: b, targetMAC: .zero)
            case (_, "tcp"?): payload = .tcp(sourcePort: transport!.source, destinationPort: transport!.destination, sequence: 1, acknowledgment: 0,
                                             flags: 0x18, data: data)
            case (_, "udp"?): payload = .udp(sourcePort: transport!.source, destinationPort: transport!.destination, data: data)
            default: payload = .icmpEcho(request: true, identifier: 1, sequence: 1, data: data)
            }
            return FrameBuilder.frame(destinationMAC: dst, sourceMAC: src, vlan: vlan, source: s, destination: d, tos: tos,
                                      dontFragment: df, payload: payload, pad: pad)
        }
        let bare = make([], pad: false)
        guard let length, length > bare.count, network?.kind != "arp" else { return make([], pad: true) }
        return make(FrameBuilder.pattern(length - bare.count), pad: true)
    }
}

/// A `ferry ctl trace` spec that does not parse: what is wrong, and the right form.
public struct TraceSpecError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
