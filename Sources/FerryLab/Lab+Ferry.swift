import Foundation

extension Lab {
    /// Where host `index`'s Ferry listens for `ferry ctl`.
    public func controlPath(_ index: Int) -> String { "/run/ferry/\(prefix)-h\(index).sock" }

    /// `ferry run` arguments for a host: a TAP on bridge0, and as peers `peers` (every other
    /// host when nil; none for an empty list, as for a host that learns its peers).
    public func ferryArguments(_ host: Host, peers: [Host]? = nil, tunnel: [String], extra: [String] = []) -> [String] {
        var args = ["run", "--tap", "ferry0", "--bridge", "bridge0", "--local", host.underlay,
                    "--control", controlPath(host.index), "--stats-interval", "0"]
        args += tunnel
        for other in peers ?? hosts.filter({ $0.index != host.index }) { args += ["--peer", other.underlay] }
        return args + extra
    }

    /// Starts Ferry on `host` and waits (`readyTimeout` at most) until it answers `ferry ctl stats` on its
    /// control socket: the socket file alone is not enough, as it exists from `bind`, before
    /// Ferry listens, and a crashed run may have left one (removed first, all the same).
    /// `peers` as for `ferryArguments`; with `workingDirectory`, Ferry runs there. Without
    /// `waitUntilReady`, it returns once the process is started.
    @discardableResult
    public func startFerry(binary: String, on host: Host, peers: [Host]? = nil, tunnel: [String], extra: [String] = [],
                           log: String, workingDirectory: String? = nil, waitUntilReady: Bool = true) throws -> Process {
        try? FileManager.default.createDirectory(atPath: "/run/ferry", withIntermediateDirectories: true)
        let path = controlPath(host.index)
        try? FileManager.default.removeItem(atPath: path)
        let arguments = ferryArguments(host, peers: peers, tunnel: tunnel, extra: extra)
        let process = try spawn(host.namespace, [binary] + arguments, log: log, workingDirectory: workingDirectory)
        guard waitUntilReady else { return process }
        // Generous: a start that reads a large config on a busy machine takes seconds; one that
        // fails ends the wait at once.
        let ready = Lab.waitUntil(timeout: Self.readyTimeout, interval: 0.1) {
            guard process.isRunning else { return true }
            guard FileManager.default.fileExists(atPath: path) else { return false }
            return (try? Lab.capture([binary, "ctl", "--control", path, "stats"], timeout: 5))?.status == 0
        }
        guard ready, process.isRunning else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw CommandFailure(command: ["ferry"] + arguments, status: process.isRunning ? -1 : process.terminationStatus,
                                 stderr: text.isEmpty ? "did not answer on \(path) within \(Int(Self.readyTimeout)) s" : text)
        }
        return process
    }

    /// Stops Ferry on a host with SIGINT (so it logs its summary) and waits for it, bounded.
    /// How long a Ferry started by the lab may take to answer on its control socket.
    public static var readyTimeout: Double { 45 }

    public static func stop(_ process: Process, timeout: Double = 10) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGINT)
        if !waitUntil(timeout: timeout, { !process.isRunning }) { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// The path of the running executable, to start more of it inside namespaces.
    public static var currentExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}
