import FerryEngine
import FerryWire

/// `ferry ctl trace`'s request: one line, `trace egress HEX`, `trace ingress from=ADDRESS
/// [id=N] [ecn=N] HEX` (the inner frame, as a packet from ADDRESS with VNI or key N, and outer
/// ECN field N, would reach the worker) or `trace ingress outer HEX` (a whole outer frame). The
/// frame travels as hex, so this line may be longer than the others:
/// `TraceRequest.maximumLength`. The answer is a `TraceReport`, or a refusal.
public struct TraceRequest: Sendable, Equatable {
    public var frame: [UInt8]
    public var direction: TraceDirection

    /// The longest trace line: a 64 KiB frame in hex and its words.
    public static let maximumLength = 2 * 65_600 + 256
    /// The word a trace line starts with (and its space): the server reads such a line up to
    /// `maximumLength`, any other up to `ControlRequest.maximumLength`.
    public static let prefix = Array("trace ".utf8)

    public init(frame: [UInt8], direction: TraceDirection) {
        self.frame = frame
        self.direction = direction
    }

    /// The line a client sends.
    public var line: String {
        var words = ["trace"]
        switch direction {
        case .egress: words.append("egress")
        case .ingress(let from, let id, let ecn):
            words.append("ingress")
            if let from {
                words.append("from=\(from)")
                if let id { words.append("id=\(id)") }
                words.append("ecn=\(ecn)")
            } else {
                words.append("outer")
            }
        }
        words.append(Self.hex(frame))
        return words.joined(separator: " ") + "\n"
    }

    static let forms = "trace egress HEX, trace ingress from=ADDRESS [id=N] [ecn=0-3] HEX, or trace ingress outer HEX"

    /// Parses a line as the server receives it; nil when it is not a trace request.
    public init?(line: some StringProtocol) throws(ControlRequestError) {
        let words = String(line).split(whereSeparator: { (c: Character) in c.isWhitespace }).map(String.init)
        guard words.first == "trace" else { return nil }
        guard line.utf8.count <= Self.maximumLength else { throw .malformed("a trace line longer than \(Self.maximumLength) bytes: trace one frame of at most 64 KiB") }
        guard words.count >= 3, let bytes = Self.bytes(fromHex: words[words.count - 1]) else {
            throw .malformed("write \(Self.forms), with the frame's bytes as an even number of hex digits")
        }
        guard !bytes.isEmpty else { throw .malformed("trace: no frame bytes") }
        let middle = words[2..<(words.count - 1)]
        switch words[1] {
        case "egress":
            guard middle.isEmpty else { throw .malformed("trace egress takes only the frame: write trace egress HEX") }
            self.init(frame: bytes, direction: .egress)
        case "ingress":
            if middle.elementsEqual(["outer"]) {
                self.init(frame: bytes, direction: .ingress(from: nil, tunnelID: nil, outerECN: 0))
                return
            }
            var from: IPAddress?, id: UInt32?, ecn: UInt8 = 0
            for word in middle {
                let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { throw .malformed("trace ingress: '\(word)' is not KEY=VALUE; write \(Self.forms)") }
                switch parts[0] {
                case "from":
                    guard let a = IPAddress(parts[1]) else { throw .malformed("trace ingress: from=\(parts[1]) is not an IP address") }
                    from = a
                case "id":
                    guard let n = UInt32(parts[1]) else { throw .malformed("trace ingress: id=\(parts[1]) is not a VNI or key") }
                    id = n
                case "ecn":
                    guard let n = UInt8(parts[1]), n <= 3 else { throw .malformed("trace ingress: ecn=\(parts[1]) is not 0 to 3") }
                    ecn = n
                default:
                    throw .malformed("trace ingress: unknown word '\(parts[0])'; write \(Self.forms)")
                }
            }
            guard let from else { throw .malformed("trace ingress needs from=ADDRESS (or outer, for a whole outer frame)") }
            self.init(frame: bytes, direction: .ingress(from: from, tunnelID: id, outerECN: ecn))
        default:
            throw .malformed("trace: '\(words[1])' is no direction; write \(Self.forms)")
        }
    }

    /// `bytes` as lowercase hex digits.
    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes of `text`, hex digits in pairs (":" and "-" between pairs allowed); nil if it is not that.
    public static func bytes(fromHex text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var high: UInt8? = nil
        for c in text.utf8 {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c - UInt8(ascii: "A") + 10
            case UInt8(ascii: ":"), UInt8(ascii: "-"):
                guard high == nil else { return nil }
                continue
            default: return nil
            }
            if let h = high {
                out.append(h << 4 | v)
                high = nil
            } else {
                high = v
            }
        }
        return high == nil ? out : nil
    }
}
