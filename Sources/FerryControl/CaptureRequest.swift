import FerryEngine
import Foundation

/// `capture …`: the one request that is answered not by a JSON document but by a pcapng
/// stream (`CaptureStreamer`), until `count` records, `duration` seconds, or the client ends
/// it. The line: `capture [point=P] [count=N] [duration=S] [filter=EXPR]`, the filter last and
/// taking the rest of the line (it has spaces); the whole line within
/// `ControlRequest.maximumLength` bytes. A refusal (`{"error":…}`) comes before any pcapng.
public struct CaptureRequest: Sendable, Equatable {
    public var point: CapturePoint = .inner
    /// A tcpdump-syntax filter, compiled by the server (libpcap) once for the capture.
    public var filter: String?
    /// Records to stream before ending; nil: no limit.
    public var count: Int?
    /// Seconds to stream before ending; nil: no limit.
    public var duration: Double?

    public static let word = "capture"
    /// The largest `count`, and the longest `duration` (a day), taken.
    public static let maximumCount = 1 << 40
    public static let maximumDuration: Double = 86_400

    public init(point: CapturePoint = .inner, filter: String? = nil, count: Int? = nil, duration: Double? = nil) {
        self.point = point
        self.filter = filter
        self.count = count
        self.duration = duration
    }

    /// The points a request may name, as an error message lists them.
    public static var points: String { "inner, outer, drops, both (inner and outer) or all" }

    /// The line a client sends.
    public var line: String {
        var words = [Self.word, "point=\(point.rawValue)"]
        if let count { words.append("count=\(count)") }
        if let duration { words.append("duration=\(duration)") }
        if let filter, !filter.isEmpty { words.append("filter=\(filter)") }
        return words.joined(separator: " ") + "\n"
    }

    /// Checks the values a client is about to send (what the server would refuse), with a
    /// message that says what is wrong.
    public func validate() throws(ControlRequestError) {
        if let count, !(1...Self.maximumCount).contains(count) {
            throw .malformed("capture: count must be a whole number from 1 to \(Self.maximumCount), not \(count)")
        }
        if let duration, !(duration > 0 && duration <= Self.maximumDuration) {
            throw .malformed("capture: duration must be more than 0 and at most \(Int(Self.maximumDuration)) seconds, not \(duration)")
        }
        if line.utf8.count > ControlRequest.maximumLength {
            throw .malformed("capture: the request is longer than \(ControlRequest.maximumLength) bytes; shorten the filter")
        }
    }

    /// Parses a request line; nil when it is not a capture request at all, a `.malformed`
    /// error saying what is wrong when it is one with bad arguments.
    public init?(line: some StringProtocol) throws(ControlRequestError) {
        var rest = Substring(line.trimmingCharacters(in: .whitespacesAndNewlines))
        guard rest == Self.word || rest.hasPrefix(Self.word + " ") else { return nil }
        rest = rest.dropFirst(Self.word.count).drop(while: { $0 == " " })
        let form = "the form is: capture [point=\(CapturePoint.allCases.map(\.rawValue).joined(separator: "|"))] [count=N] [duration=SECONDS] [filter=EXPRESSION]"
        while !rest.isEmpty {
            if rest.hasPrefix("filter=") {
                let expression = rest.dropFirst("filter=".count).trimmingCharacters(in: .whitespaces)
                filter = expression.isEmpty ? nil : expression
                break
            }
            let word = rest.prefix(while: { $0 != " " })
            rest = rest.dropFirst(word.count).drop(while: { $0 == " " })
            guard let equals = word.firstIndex(of: "=") else {
                throw .malformed("capture: '\(word)' is not key=value; \(form)")
            }
            let key = word[..<equals], value = String(word[word.index(after: equals)...])
            switch key {
            case "point":
                guard let p = CapturePoint(rawValue: value) else {
                    throw .malformed("capture: '\(value)' is not a capture point; use \(Self.points)")
                }
                point = p
            case "count":
                guard let n = Int(value) else {
                    throw .malformed("capture: count must be a whole number from 1 to \(Self.maximumCount), not '\(value)'")
                }
                count = n
            case "duration":
                guard let d = Double(value), d.isFinite else {
                    throw .malformed("capture: duration must be a number of seconds, not '\(value)'")
                }
                duration = d
            default:
                throw .malformed("capture: unknown argument '\(key)'; \(form)")
            }
        }
        try validate()
    }
}
