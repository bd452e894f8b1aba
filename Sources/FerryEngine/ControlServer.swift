import FerryLinux
import Foundation
import Logging

/// Answers `ferry ctl` over a Unix socket: a request line (`stats` or `fdb`), a JSON reply.
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
            defer { unlink(path); finished.leave() }
            while !engine.isStopping {
                guard let connection = try? socket.accept(waitingUpTo: 200) else { continue }
                do {
                    let request = try connection.readLine().trimmingCharacters(in: .whitespaces)
                    try connection.writeAll(Array(reply(to: request).utf8))
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

    func reply(to request: String) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data: Data?
        switch request {
        case "stats": data = try? encoder.encode(engine.statistics())
        case "fdb": data = try? encoder.encode(engine.forwardingEntries())
        default: return #"{"error":"unknown request '\#(request)'; ask for stats or fdb"}"#
        }
        return data.map { String(decoding: $0, as: UTF8.self) } ?? #"{"error":"encoding failed"}"#
    }
}
