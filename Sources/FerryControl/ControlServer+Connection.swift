import FerryEngine
import FerryLinux

/// One client of the control socket, from accept to close: it reads a request line (bounded in
/// size and in time), then writes its reply in whatever pieces the socket takes (bounded in
/// time). The loop's thread alone touches it.
final class ControlConnection {
    enum Phase {
        /// Reading the request line; the bytes so far.
        case reading([UInt8])
        /// Waiting for the forwarding-table snapshot its `fdb` reply is made from.
        case awaitingSnapshot
        /// Waiting for its change (`ControlChange`) to be made, off the loop.
        case awaitingChange
        /// Writing the reply.
        case writing(ReplyStream)
    }

    let socket: UnixSocket
    var phase: Phase = .reading([])
    /// When the current phase must be over.
    var deadline: ContinuousClock.Instant
    /// The change this connection waits for (`ControlLoop.change`), if any.
    var changeTicket: Int?

    init(socket: UnixSocket, deadline: ContinuousClock.Instant) {
        self.socket = socket
        self.deadline = deadline
    }

    var isWriting: Bool { if case .writing = phase { true } else { false } }
    var isReading: Bool { if case .reading = phase { true } else { false } }

    /// What a read did.
    enum ReadOutcome {
        /// The request line is not complete yet.
        case waiting
        /// The request line as received (up to its newline, or all there was), for the parser.
        case line(String)
        /// The connection failed (reset by the client).
        case failed(LinuxError)
    }

    /// Reads what the client sent. A line is complete at its newline, at the end of the
    /// client's sending, or past `ControlRequest.maximumLength` bytes (the parser then refuses
    /// it as too long): never more than that is read or kept. (A trace line, `TraceRequest`,
    /// may have `TraceRequest.maximumLength`.)
    func read() -> ReadOutcome {
        guard case .reading(var bytes) = phase else { return .waiting }
        let limit = Self.lineLimit(bytes)
        let room = max(1, limit + 1 - bytes.count)
        let result: IOResult<Int>
        do {
            result = try socket.receive(upTo: room, appendingTo: &bytes)
        } catch {
            return .failed(error)
        }
        phase = .reading(bytes)
        guard let n = result.value else { return .waiting }
        if let newline = bytes.firstIndex(of: 10) {
            return .line(String(decoding: bytes[..<newline], as: UTF8.self))
        }
        if n == 0 || bytes.count > Self.lineLimit(bytes) {
            return .line(String(decoding: bytes, as: UTF8.self))
        }
        return .waiting
    }

    /// What a write did.
    enum WriteOutcome {
        /// The socket takes no more now; the rest waits for POLLOUT.
        case blocked
        /// The whole reply is written.
        case done
        case failed(LinuxError)
    }

    /// Writes as much of the reply as the socket takes now, at most `budget` bytes (so that one
    /// fast reader cannot keep the loop from the others).
    func write(budget: Int = 1 << 20) -> WriteOutcome {
        guard case .writing(var stream) = phase else { return .done }
        defer { phase = .writing(stream) }
        var written = 0
        while written < budget {
            if stream.pending.isEmpty && !stream.refill() { return .done }
            do {
                guard let n = try socket.sendSome(stream.pending).value else { return .blocked }
                stream.pending = stream.pending.dropFirst(n)
                written += n
            } catch {
                return .failed(error)
            }
        }
        return .blocked
    }
}

/// A reply, produced a piece at a time: whole for a short one, rendered as the client takes
/// it for the forwarding table (`fdb`), so that a client that never reads costs one socket
/// buffer, not the rendering of the whole table.
struct ReplyStream {
    /// Bytes produced and not yet sent.
    var pending: ArraySlice<UInt8>
    var snapshot: ForwardingSnapshot?
    /// The next record of `snapshot` to render; past the end once the closing bracket is out.
    var next = 0
    /// Entries rendered per piece: a few hundred microseconds of the loop.
    static let entriesPerPiece = 256

    /// A reply that is all there already.
    init(_ text: String) {
        pending = ArraySlice(text.utf8)
    }

    /// The JSON array of `snapshot`'s entries, as `ControlReply.encode(snapshot.entries())`
    /// would write it, rendered `entriesPerPiece` at a time.
    init(forwarding snapshot: ForwardingSnapshot) {
        self.snapshot = snapshot
        pending = ArraySlice("[".utf8)
    }

    /// Produces the next piece into `pending`; false when the reply is complete.
    mutating func refill() -> Bool {
        guard let snapshot, next <= snapshot.count else { return false }
        guard next < snapshot.count else {
            pending = ArraySlice("]".utf8)
            next += 1
            return true
        }
        if peers.isEmpty {
            peers = snapshot.peerAddresses.map { address in
                var json: [UInt8] = []
                Self.appendJSONString(address, to: &json)
                return json
            }
        }
        let end = min(snapshot.count, next + Self.entriesPerPiece)
        var piece: [UInt8] = []
        piece.reserveCapacity((end - next) * 96)
        for k in next..<end {
            if k > 0 { piece.append(UInt8(ascii: ",")) }
            appendJSON(snapshot.records[k], to: &piece)
        }
        pending = ArraySlice(piece)
        next = end
        return true
    }

    /// The peers' addresses as JSON strings, made once per reply.
    var peers: [[UInt8]] = []

    /// Record `r` as `ControlReply.encode` writes its `FDBEntry` (keys sorted, no spaces),
    /// written straight from the record: JSONEncoder takes some 5 µs an entry, seconds of the
    /// loop for 2^20 entries. (ControlServerTests compares the two byte for byte, so that a field
    /// added to `FDBEntry` is not missed here.)
    func appendJSON(_ r: ForwardingSnapshot.Record, to out: inout [UInt8]) {
        out += Self.ageKey
        Self.appendDecimal(r.ageSeconds ?? 0, to: &out)
        out += r.ageSeconds == nil ? Self.staticTrue : Self.staticFalse
        out.append(UInt8(ascii: "\""))
        for i in 0..<6 {
            let octet = UInt8(truncatingIfNeeded: r.mac >> UInt64(40 - 8 * i))
            if i > 0 { out.append(UInt8(ascii: ":")) }
            out.append(Self.hexDigits[Int(octet >> 4)])
            out.append(Self.hexDigits[Int(octet & 15)])
        }
        out += Self.peerKey
        if r.peer < peers.count {
            out += peers[r.peer]
        } else {
            Self.appendJSONString("peer \(r.peer)", to: &out)  // as `ForwardingSnapshot.entries` names it
        }
        out.append(UInt8(ascii: "}"))
    }

    static let ageKey = Array(#"{"ageSeconds":"#.utf8)
    static let staticTrue = Array(#","isStatic":true,"mac":"#.utf8)
    static let staticFalse = Array(#","isStatic":false,"mac":"#.utf8)
    static let peerKey = Array(#"","peer":"#.utf8)
    static let hexDigits = Array("0123456789abcdef".utf8)

    /// `value` in decimal, as JSONEncoder writes an integer.
    static func appendDecimal(_ value: Int64, to out: inout [UInt8]) {
        if value < 0 { out.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                count += 1
            } while magnitude > 0
            for i in stride(from: count - 1, through: 0, by: -1) { out.append(d[i]) }
        }
    }

    /// A JSON string as JSONEncoder escapes it: quotes, backslashes, slashes, control characters.
    static func appendJSONString(_ text: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += #"\""#.utf8
            case UInt8(ascii: "\\"): out += #"\\"#.utf8
            case UInt8(ascii: "/"): out += #"\/"#.utf8
            case 0x0A: out += #"\n"#.utf8
            case 0x0D: out += #"\r"#.utf8
            case 0x09: out += #"\t"#.utf8
            case 0x08: out += #"\b"#.utf8
            case 0x0C: out += #"\f"#.utf8
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += #"\u00"#.utf8
                out += [hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
