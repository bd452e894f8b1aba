import ArgumentParser
import FerryCapture
import FerryControl
import FerryEngine
import Foundation
import Glibc

/// The capture socket, for the SIGINT handler: Ctrl-C shuts its sending side, which asks the
/// ferry to end the stream cleanly (a second Ctrl-C ends the process at once).
nonisolated(unsafe) var captureSocketForSignal: Int32 = -1

/// `ferry ctl capture`: what a running ferry sees, streamed as pcapng over its control socket.
struct CtlCaptureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Capture from a running ferry, as pcapng: inner frames, outer packets, or what it drops and why.",
        discussion: """
            Streams until --count records, --duration seconds, or Ctrl-C; ends by saying on standard error how many \
            records came and how many the ferry lost because this reader was too slow (forwarding never waits for it). \
            ferry ctl capture -w - | tshark -r -   shows them as they come; drops carry their reason, peer, worker and \
            direction in the packet comment (tshark: -Y 'frame.comment contains "unexpected_vni"').
            """
    )

    @OptionGroup var socket: ControlSocketOptions

    @Option(name: .long, help: ArgumentHelp("""
        inner (frames on the bridge side), outer (packets on the underlay), drops (what ferry refuses, with why), \
        both (inner and outer) or all.
        """, valueName: "point"))
    var point: String = "inner"

    @Option(name: .long, help: ArgumentHelp("A tcpdump-syntax filter (libpcap), applied by the ferry.", valueName: "expression"))
    var filter: String?

    @Option(name: .long, help: ArgumentHelp("Stop after this many records.", valueName: "n"))
    var count: Int?

    @Option(name: .long, help: ArgumentHelp("Stop after this many seconds.", valueName: "seconds"))
    var duration: Double?

    @Option(name: [.customShort("w"), .long], help: ArgumentHelp("""
        Write pcapng to this file (created 0600), or - for standard output.
        """, valueName: "file"))
    var write: String = "-"

    func request() throws -> CaptureRequest {
        guard let p = CapturePoint(rawValue: point) else {
            throw ValidationError("--point '\(point)' is not a capture point; use \(CaptureRequest.points)")
        }
        let r = CaptureRequest(point: p, filter: filter, count: count, duration: duration)
        do {
            try r.validate()
        } catch {
            throw ValidationError(error.description.replacingOccurrences(of: "capture: count", with: "--count")
                .replacingOccurrences(of: "capture: duration", with: "--duration"))
        }
        return r
    }

    func validate() throws {
        _ = try request()
        if write == "-", isatty(1) != 0 {
            throw ValidationError("pcapng is binary: give -w FILE, or pipe standard output to a reader (| tshark -r -)")
        }
    }

    func run() throws {
        let path = try socket.socketPath()
        let request = try request()
        let fd: Int32
        do {
            fd = try CaptureFile.create(path: write)
        } catch {
            throw ToolError(error.description)
        }
        defer { if write != "-" { close(fd) } }
        // A reader that leaves (tshark quits) is EPIPE here, not a signal that ends ferry.
        signal(SIGPIPE, SIG_IGN)
        var outputFailure: String?
        let summary: CaptureStreamSummary
        do {
            summary = try ControlClient.capture(request, at: path, connected: { fd in
                captureSocketForSignal = fd
                signal(SIGINT) { _ in
                    shutdown(captureSocketForSignal, Int32(SHUT_WR))
                    signal(SIGINT, SIG_DFL)
                }
            }) { bytes in
                // Written at once, unbuffered: a reader on a pipe sees each packet as it comes.
                var offset = 0
                while offset < bytes.count {
                    let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        outputFailure = String(cString: strerror(errno))
                        return false
                    }
                    offset += n
                }
                return true
            }
        } catch {
            // Nothing was captured: no empty file is left behind (a FIFO or device stays).
            var st = stat()
            if write != "-", fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_size == 0 { unlink(write) }
            throw ToolError(error.description)
        }
        signal(SIGINT, SIG_DFL)
        if let outputFailure, write != "-" {
            throw ToolError("writing \(write) failed: \(outputFailure); \(summary.records) records written")
        }
        FileHandle.standardError.write(Data((summary.report + "\n").utf8))
    }
}
