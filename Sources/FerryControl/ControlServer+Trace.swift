import FerryEngine

// `trace` requests (`TraceRequest`): answered on the loop, at once. A trace reads the engine's
// state as the control side does (the forwarding table under its lock for one lookup, peers
// through `PeerTable.all`): microseconds, and nothing a worker waits on for longer.
extension ControlLoop {
    /// The reply to `line` if it is a trace request (a report, or a refusal); nil otherwise.
    func traceReply(to line: String) -> ReplyStream? {
        let request: TraceRequest
        do {
            guard let parsed = try TraceRequest(line: line) else { return nil }
            request = parsed
        } catch {
            return ReplyStream(ControlReply.refusal(error.description))
        }
        switch source.trace(request.frame, request.direction) {
        case .success(let report): return ReplyStream(ControlReply.encode(report))
        case .failure(let refusal): return ReplyStream(ControlReply.refusal(refusal.message))
        }
    }
}

extension ControlConnection {
    /// The most bytes a request line may have, from what has arrived of it: a trace's longer.
    static func lineLimit(_ bytes: [UInt8]) -> Int {
        bytes.starts(with: TraceRequest.prefix) ? TraceRequest.maximumLength : ControlRequest.maximumLength
    }
}

extension Engine {
    public func trace(_ frame: [UInt8], _ direction: TraceDirection) -> Result<TraceReport, ControlChangeRefusal> {
        .success(trace(frame: frame, direction: direction))
    }
}

extension EngineControl {
    public func trace(_ frame: [UInt8], _ direction: TraceDirection) -> Result<TraceReport, ControlChangeRefusal> {
        guard let engine = engine as? Engine else { return .failure(ControlChangeRefusal("this ferry's engine cannot trace")) }
        return engine.trace(frame, direction)
    }
}
