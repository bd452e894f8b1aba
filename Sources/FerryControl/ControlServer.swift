import FerryEngine
import FerryLinux
import Foundation
import Logging

/// Answers `ferry ctl` over a Unix socket: a request line, a JSON reply (`ControlRequest`).
///
/// `@unchecked Sendable`: every stored property is immutable; the socket is used by the
/// server's one thread only.
public final class ControlServer: @unchecked Sendable {
    public let path: String
    let socket: UnixSocket
    let engine: Engine
    let finished = DispatchGroup()

    public init(path: String, engine: Engine) throws(LinuxError) {
        self.path = path
        self.engine = engine
        socket = try UnixSocket.listen(at: path)
    }

    /// Serves until the engine stops, on a thread of its own; removes the socket file after.
    public func start(logger: Logger) {
        finished.enter()
        let t = Thread { [self] in
            defer { UnixSocket.removeFile(at: path); finished.leave() }
            while !engine.isStopping {
                guard let connection = try? socket.accept(waitingUpTo: 200) else { continue }
                do {
                    let line = try connection.readLine(limit: ControlRequest.maximumLength + 1)
                    try connection.writeAll(Array(reply(to: line).utf8))
                } catch {
                    logger.warning("control connection: \(error)")
                }
            }
        }
        t.name = "ferry-control"
        t.start()
    }

    /// Waits until the server has stopped (after the engine) and removed its socket file.
    public func wait() { finished.wait() }

    func reply(to line: String) -> String {
        let request: ControlRequest
        do {
            request = try ControlRequest(line: line)
        } catch {
            return ControlReply.refusal(error.description)
        }
        switch request {
        case .stats: return ControlReply.encode(engine.statistics())
        case .fdb: return ControlReply.encode(engine.forwardingEntries())
        }
    }
}
