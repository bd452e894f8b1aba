import FerryEngine
import Foundation

/// What `ferry ctl` may ask a running ferry over its control socket: one request line (the raw
/// value and a newline), answered by one JSON document, after which the server closes the
/// connection. A reply is the requested value, or `{"error":"…"}` when the request is refused.
public enum ControlRequest: String, CaseIterable, Sendable {
    /// The counters: totals, per peer, per drop reason, per worker (`Statistics`).
    case stats
    /// The forwarding table (`[FDBEntry]`).
    case fdb
    /// Membership from etcd as this host sees it (`ferry ctl members`); refused by a ferry
    /// started without `--etcd`.
    case members

    /// The longest request line, in bytes, that the server reads as a request.
    public static let maximumLength = 256

    /// The line a client sends.
    public var line: String { rawValue + "\n" }

    /// Parses a request line as the server receives it; whitespace around it (a CR from a
    /// `socat` or `nc` user, say) is ignored.
    public init(line: some StringProtocol) throws(ControlRequestError) {
        guard line.utf8.count <= Self.maximumLength else { throw .tooLong }
        let word = line.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !word.isEmpty else { throw .empty }
        guard let request = ControlRequest(rawValue: word) else { throw .unknown(word) }
        self = request
    }

    /// The requests, as an error message lists them: "stats, fdb or one of the changes (…)".
    static var choices: String {
        allCases.map(\.rawValue).joined(separator: ", ") + ", capture [point=P] [count=N] [duration=S] [filter=EXPR]"
            + " or a change (" + ControlChange.forms + ")"
    }
}

/// A request line the server cannot answer.
public enum ControlRequestError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Nothing but whitespace, or nothing at all before the client closed.
    case empty
    /// A line longer than `ControlRequest.maximumLength` bytes; not quoted back.
    case tooLong
    /// A word that is not a request, as received (at most `maximumLength` bytes).
    case unknown(String)
    /// A change (`ControlChange`) whose arguments are wrong: what is wrong, and the right form.
    case malformed(String)

    public var description: String {
        switch self {
        case .empty: "empty request; ask for \(ControlRequest.choices)"
        case .tooLong: "request longer than \(ControlRequest.maximumLength) bytes; ask for \(ControlRequest.choices)"
        case .unknown(let word): "unknown request '\(word)'; ask for \(ControlRequest.choices)"
        case .malformed(let message): message
        }
    }
}

/// The JSON of replies, written by the server and read by clients.
public enum ControlReply {
    /// The shape of a refusal: `{"error":"…"}`.
    struct Refusal: Codable {
        var error: String
    }

    /// A reply carrying `value`, keys sorted; a refusal if it cannot be encoded.
    public static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            return String(decoding: try encoder.encode(value), as: UTF8.self)
        } catch {
            return refusal("cannot encode the reply: \(error)")
        }
    }

    /// A refusal carrying `message`, escaped as JSON requires (quotes, backslashes, control
    /// characters).
    public static func refusal(_ message: String) -> String {
        // Encoding a struct of one string cannot fail.
        String(decoding: try! JSONEncoder().encode(Refusal(error: message)), as: UTF8.self)
    }

    /// The value a reply carries; `.refused` with the server's message if it is a refusal,
    /// `.malformedReply` if it is neither.
    public static func decode<T: Decodable>(_ type: T.Type, from reply: [UInt8]) throws(ControlClientError) -> T {
        let data = Data(reply)
        let decoder = JSONDecoder()
        if let refusal = try? decoder.decode(Refusal.self, from: data) {
            throw .refused(refusal.error)
        }
        do {
            return try decoder.decode(T.self, from: data)
        } catch {
            throw .malformedReply("\(error)")
        }
    }
}
