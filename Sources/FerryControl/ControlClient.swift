import FerryEngine
import FerryLinux
import Glibc

/// Asks a running ferry over its control socket, as `ferry ctl` does.
public enum ControlClient {
    /// Sends `request` to the ferry listening at `path` and returns its reply as received.
    public static func send(_ request: ControlRequest, to path: String) throws(ControlClientError) -> [UInt8] {
        do {
            let socket = try UnixSocket.connect(to: path)
            try socket.writeAll(Array(request.line.utf8))
            return try socket.readAll()
        } catch {
            throw .system(error)
        }
    }

    /// Asks the ferry listening at `path` to make `change`; what it did, or `.refused` with why
    /// it did nothing.
    public static func send(_ change: ControlChange, to path: String) throws(ControlClientError) -> ControlChangeReport {
        let reply: [UInt8]
        do {
            let socket = try UnixSocket.connect(to: path)
            try socket.writeAll(Array(change.line.utf8))
            reply = try socket.readAll()
        } catch {
            throw .system(error)
        }
        return try ControlReply.decode(ControlChangeReport.self, from: reply)
    }

    /// The counters of the ferry listening at `path`.
    public static func statistics(at path: String) throws(ControlClientError) -> Statistics {
        try ControlReply.decode(Statistics.self, from: send(.stats, to: path))
    }

    /// The forwarding table of the ferry listening at `path`.
    public static func forwardingEntries(at path: String) throws(ControlClientError) -> [FDBEntry] {
        try ControlReply.decode([FDBEntry].self, from: send(.fdb, to: path))
    }
}

/// Why a question to a running ferry got no answer.
public enum ControlClientError: Error, Equatable, CustomStringConvertible {
    /// The socket could not be reached, written or read (no ferry there, no permission, no reply).
    case system(LinuxError)
    /// The ferry answered with a refusal; its message.
    case refused(String)
    /// The reply is not the JSON expected (the decoder's account of it).
    case malformedReply(String)

    public var description: String {
        switch self {
        case .system(let e): e.description
        case .refused(let message): "the running ferry refused the request: \(message)"
        case .malformedReply(let detail):
            "the running ferry's reply is not what this ferry ctl reads (\(detail)); are both the same version?"
        }
    }
}

extension ControlClient {
    /// What the ferry listening at `path` would do with `request`'s frame.
    public static func trace(_ request: TraceRequest, at path: String) throws(ControlClientError) -> TraceReport {
        let reply: [UInt8]
        do {
            let socket = try UnixSocket.connect(to: path)
            try socket.writeAll(Array(request.line.utf8))
            reply = try socket.readAll()
        } catch {
            throw .system(error)
        }
        return try ControlReply.decode(TraceReport.self, from: reply)
    }

    /// Asks the ferry listening at `path` for a capture and passes its pcapng stream, as it
    /// comes, to `output` (false from it: stop reading, which closes the connection and
    /// detaches the capture at once). `connected` gets the socket's descriptor first: shutting
    /// its sending side (`shutdown(fd, SHUT_WR)`) asks the ferry to end the stream cleanly, with
    /// its count of lost records. A refusal (`{"error":…}`, sent before any pcapng) throws
    /// `.refused`. Returns what the stream held.
    public static func capture(_ request: CaptureRequest, at path: String, connected: (Int32) -> Void = { _ in },
                               output: (UnsafeRawBufferPointer) -> Bool) throws(ControlClientError) -> CaptureStreamSummary {
        let socket: UnixSocket
        do {
            socket = try UnixSocket.connect(to: path)
            try socket.writeAll(Array(request.line.utf8))
        } catch {
            throw .system(error)
        }
        connected(socket.fd)
        var summary = CaptureStreamSummary()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var first = true
        var refusal: [UInt8] = []
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(socket.fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                // The ferry reset the connection: what came is what there is.
                break
            }
            if n == 0 { break }
            if first, chunk[0] == UInt8(ascii: "{") { refusal += chunk[0..<n]; continue }
            if !refusal.isEmpty { refusal += chunk[0..<n]; continue }
            first = false
            let more = chunk.withUnsafeBytes { raw in
                let bytes = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                summary.consume(bytes)
                return output(bytes)
            }
            if !more { break }
        }
        if !refusal.isEmpty {
            _ = try ControlReply.decode([String: String].self, from: refusal)
            throw .malformedReply(String(decoding: refusal, as: UTF8.self))
        }
        return summary
    }
}
