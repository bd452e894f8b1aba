import ArgumentParser
import FerryCapture
import FerryControl
import FerryEngine
import Foundation

/// `ferry ctl trace`: what the running ferry would do with one frame, decision by decision, as
/// Open vSwitch's `ofproto/trace` (nothing is sent, learned or counted).
struct CtlTraceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Show what the running ferry would do with a frame, decision by decision (nothing is sent).",
        discussion: """
            The frame is described by words (\(TraceSpec.forms)), or given as bytes: --hex, or --pcap FILE --frame N. \
            in=tap traces a frame from the bridge; in=tunnel from=ADDRESS one from peer ADDRESS (vni=/key= another VNI or key, \
            ecn= the outer ECN field); in=tunnel with bytes and no from= takes them as a whole outer frame (Ethernet, IP, \
            UDP/VXLAN or GRE). The answer ends in a verdict: sent to PEER, flooded to [PEERS], delivered to the bridge, or \
            dropped: REASON (as ferry ctl stats names it).
            """
    )

    @OptionGroup var socket: ControlSocketOptions

    @Argument(help: ArgumentHelp("in=tap|tunnel [from=… vni=… ecn=…] and the frame's words (see the discussion).", valueName: "spec"))
    var words: [String] = []

    @Option(name: .long, help: ArgumentHelp("The frame's bytes in hex (spaces and colons allowed).", valueName: "hex"))
    var hex: String?

    @Option(name: .long, help: ArgumentHelp("A pcap or pcapng file holding the frame (with --frame).", valueName: "file"))
    var pcap: String?

    @Option(name: .long, help: ArgumentHelp("Which frame of --pcap, from 1 (as tshark and Wireshark number them).", valueName: "n"))
    var frame: Int?

    @Flag(name: .long, help: "Print the trace as JSON.")
    var json = false

    func validate() throws {
        if hex != nil && pcap != nil { throw ValidationError("give the frame as --hex or as --pcap FILE --frame N, not both") }
        if pcap != nil && frame == nil { throw ValidationError("--pcap needs --frame N (the frame's number, from 1)") }
        if frame != nil && pcap == nil { throw ValidationError("--frame N goes with --pcap FILE") }
        if let frame, frame < 1 { throw ValidationError("--frame \(frame): frames are numbered from 1") }
        _ = try spec()
    }

    func spec() throws -> TraceSpec {
        do {
            return try TraceSpec(words: words, hasBytes: hex != nil || pcap != nil)
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// The frame's bytes: from --hex, --pcap, or the words.
    func bytes(_ spec: TraceSpec) throws -> [UInt8] {
        if let hex {
            let text = hex.filter { !$0.isWhitespace }
            guard let bytes = TraceRequest.bytes(fromHex: text), !bytes.isEmpty else {
                throw ToolError("--hex: '\(hex.prefix(40))…' is not pairs of hex digits (like 0200000000010200…)")
            }
            return bytes
        }
        if let pcap, let frame {
            let frames: [OwnedFrame]
            do { frames = try PcapFileReader(path: pcap).readAll() } catch { throw ToolError("\(error)") }
            guard frame <= frames.count else { throw ToolError("--frame \(frame): \(pcap) holds \(frames.count) frame(s)") }
            let f = frames[frame - 1]
            guard f.capturedLength == f.originalLength else {
                throw ToolError("frame \(frame) of \(pcap) was cut to \(f.capturedLength) of its \(f.originalLength) bytes; capture it whole (tcpdump -s 0)")
            }
            return f.bytes
        }
        return spec.frame!
    }

    func run() throws {
        let path = try socket.socketPath()
        let spec = try spec()
        let request = TraceRequest(frame: try bytes(spec), direction: spec.direction)
        let report: TraceReport
        do {
            report = try ControlClient.trace(request, at: path)
        } catch {
            throw ToolError(error.description)
        }
        if json {
            print(ControlReply.encode(report))
        } else {
            print(report.text, terminator: "")
        }
    }
}
