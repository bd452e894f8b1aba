import ArgumentParser
import FerryControl
import FerrySettings
import FerryEngine
import FerryMembership
import FerryWire
import Foundation

/// `ferry ctl`: talks to a running ferry over its control socket. The plain form (`ferry ctl
/// stats`, `ferry ctl peer add …`) is `CtlRequestCommand`, the default; commands that need more
/// than one request line and one reply (streams, traces) are subcommands of their own, each
/// with the same `ControlSocketOptions`.
struct CtlCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ctl",
        abstract: "Ask a running ferry for its counters or its forwarding table, or change its peers and static entries.",
        discussion: """
            ferry ctl [--tap NAME | --control PATH] stats|fdb [--json] asks; changes, made at once without a restart: peer add ADDRESS[=SUBNET], peer del ADDRESS, \
            fdb add MAC PEER, fdb del MAC, and reload (the config file read again; the same as SIGHUP). \
            Each answers with what was done, and a reload also with what needs a restart. \
            ferry ctl trace SPEC shows what the running ferry would do with a frame (see ferry ctl trace --help); \
            ferry ctl capture streams pcapng (see ferry ctl capture --help); ferry ctl members shows the membership \
            kept in etcd.
            """,
        subcommands: [CtlRequestCommand.self, CtlCaptureCommand.self, CtlTraceCommand.self, CtlMembersCommand.self],
        defaultSubcommand: CtlRequestCommand.self
    )
}

/// Which running ferry `ferry ctl` talks to.
struct ControlSocketOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The running ferry's control socket (default: that of --tap).", valueName: "path"))
    var control: String?

    @Option(name: .long, help: ArgumentHelp("""
        The TAP of the ferry to ask: its socket is /run/ferry/NAME.sock (default: the one socket there).
        """, valueName: "name"))
    var tap: String?

    /// `--control`, else the socket of `--tap`, else the one socket in /run/ferry.
    func socketPath() throws -> String {
        if let control {
            guard tap == nil else { throw ValidationError("give --control PATH or --tap NAME, not both") }
            return control
        }
        if let tap { return RunSettings.defaultControl(tap: tap) }
        let directory = RunSettings.controlDirectory
        let sockets = Self.sockets(in: directory)
        switch sockets.count {
        case 1: return directory + "/" + sockets[0]
        case 0:
            throw ToolError("""
                no control socket in \(directory): is ferry running? If it was started with --control PATH, \
                give the same --control PATH here
                """)
        default:
            let taps = sockets.map { String($0.dropLast(".sock".count)) }
            throw ToolError("""
                \(sockets.count) ferries have control sockets in \(directory) (\(sockets.joined(separator: ", "))); \
                pick one with --tap NAME (\(taps.joined(separator: ", "))) or --control PATH
                """)
        }
    }

    /// The names of the sockets (`*.sock`) in `directory`, sorted.
    static func sockets(in directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { name in
            var st = stat()
            return name.hasSuffix(".sock") && lstat(directory + "/" + name, &st) == 0 && st.st_mode & S_IFMT == S_IFSOCK
        }.sorted()
    }
}

/// `ferry ctl stats|fdb|peer …|fdb …|reload`: one request line, one JSON reply.
struct CtlRequestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "request",
        abstract: "One request (the default, so 'request' may be left out): stats, fdb, or a change."
    )

    @OptionGroup var socket: ControlSocketOptions

    @Argument(help: ArgumentHelp("""
        stats (counters per peer and per drop reason), fdb (the forwarding table), or a change: peer add ADDRESS[=SUBNET], \
        peer del ADDRESS, fdb add MAC PEER, fdb del MAC, reload.
        """, valueName: "request"))
    var words: [String] = []

    @Flag(name: .long, help: "Print the reply as JSON.")
    var json = false

    func validate() throws {
        _ = try what()
    }

    /// The query or the change the words ask for.
    func what() throws -> Either {
        let line = words.joined(separator: " ")
        if words.count == 1, let request = ControlRequest(rawValue: words[0]) { return .query(request) }
        do {
            if let change = try ControlChange(line: line) { return .change(change) }
        } catch {
            throw ValidationError(error.description)
        }
        throw ValidationError(words.isEmpty ? "ask for stats or fdb, or give a change (see --help)"
                                            : "unknown request '\(line)'; ask for stats or fdb, or give a change (see --help)")
    }

    enum Either {
        case query(ControlRequest)
        case change(ControlChange)
    }

    func run() throws {
        let path = try socket.socketPath()
        do {
            switch try what() {
            case .query(let request): try ask(request, path)
            case .change(let change): try make(change, path)
            }
        } catch let error as ControlClientError {
            throw ToolError(error.description)
        }
    }

    /// Makes a change and prints what the ferry did (the reply as JSON with --json).
    func make(_ change: ControlChange, _ path: String) throws(ControlClientError) {
        let report = try ControlClient.send(change, to: path)
        if json {
            print(ControlReply.encode(report))
            return
        }
        for line in report.applied { print(line) }
        if case .reload = change, report.applied.isEmpty && report.failed.isEmpty { print("nothing to change") }
        for line in report.failed { print("not done: \(line)") }
        if !report.needsRestart.isEmpty {
            print("needs a restart (left as it runs):")
            for line in report.needsRestart { print("  \(line)") }
        }
    }

    func ask(_ request: ControlRequest, _ path: String) throws(ControlClientError) {
        let reply = try ControlClient.send(request, to: path)
        if json {
            print(String(decoding: reply, as: UTF8.self))
            return
        }
        switch request {
        case .stats:
            print(renderStatistics(try ControlReply.decode(Statistics.self, from: reply)), terminator: "")
        case .members:
            print(CtlMembersCommand.render(try ControlReply.decode(MembershipStatus.self, from: reply)), terminator: "")
        case .fdb:
            let entries = try ControlReply.decode([FDBEntry].self, from: reply)
            print("mac                 peer                                      age  type")
            for e in entries {
                print(pad(e.mac, 20) + pad(e.peer, 40) + pad(e.isStatic ? "-" : "\(e.ageSeconds)s", 5, left: true)
                      + "  " + (e.isStatic ? "static" : "learned"))
            }
            print("\(entries.count) entr\(entries.count == 1 ? "y" : "ies")")
        }
    }
}


/// The counters as a table: totals, per peer, and every drop reason that counted something.
func renderStatistics(_ s: Statistics) -> String {
    var out = "counters\n"
    for c in Counter.allCases {
        out += "  \(pad(c.name, 26)) \(pad(String(s.counter(c)), 14, left: true))\n"
    }
    out += "\npeers                                    tx packets        tx bytes   rx packets        rx bytes\n"
    for p in s.peers {
        out += "  " + pad(p.address + (p.retired == true ? " (retired)" : p.learned ? " (learned)" : ""), 36) + pad(String(p.txPackets), 12, left: true)
            + pad(String(p.txBytes), 16, left: true) + pad(String(p.rxPackets), 13, left: true)
            + pad(String(p.rxBytes), 16, left: true) + "\n"
        if let link = p.linkPath { out += "    link path: \(link)\n" }
    }
    let dropped = DropReason.allCases.filter { s.drops($0) > 0 }
    out += "\ndrops" + (dropped.isEmpty ? ": none\n" : "\n")
    for r in dropped {
        out += "  \(pad(r.name, 34)) \(pad(String(s.drops(r)), 10, left: true))  \(r.summary)\n"
    }
    if s.workers.count > 1 {
        out += "\nworkers      tap rx frames   tap tx frames    sent packets  received packets\n"
        for (w, k) in s.workers.enumerated() {
            out += "  " + pad(String(w), 8) + pad(String(k.tapRxFrames), 16, left: true) + pad(String(k.tapTxFrames), 16, left: true)
                + pad(String(k.sentPackets), 16, left: true) + pad(String(k.receivedPackets), 18, left: true) + "\n"
        }
    }
    out += renderBatchTimings(s)
    out += "\nforwarding table: \(s.fdbEntries) entr\(s.fdbEntries == 1 ? "y" : "ies")\n"
    if let mtu = s.underlayMTU { out += "underlay MTU: \(mtu)\n" }
    if let routes = s.hostRoutes {
        out += "routes installed by set-up" + (routes.isEmpty ? ": none\n" : "\n") + routes.map { "  \($0)\n" }.joined()
    }
    return out
}
