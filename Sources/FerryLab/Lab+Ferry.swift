import Foundation

extension Lab {
    /// Where host `index`'s Ferry listens for `ferry ctl`.
    public func controlPath(_ index: Int) -> String { "/run/ferry/\(prefix)-h\(index).sock" }

    /// `ferry run` arguments for a host: a TAP on bridge0, every other host as a peer.
    public func ferryArguments(_ host: Host, tunnel: [String], extra: [String] = []) -> [String] {
        var args = ["run", "--tap", "ferry0", "--bridge", "bridge0", "--local", host.underlay,
                    "--control", controlPath(host.index), "--stats-interval", "0"]
        args += tunnel
        for other in hosts where other.index != host.index { args += ["--peer", other.underlay] }
        return args + extra
    }

    /// Starts Ferry on `host` and waits until it answers on its control socket.
    @discardableResult
    public func startFerry(binary: String, on host: Host, tunnel: [String], extra: [String] = [],
                           log: String) throws -> Process {
        try? FileManager.default.createDirectory(atPath: "/run/ferry", withIntermediateDirectories: true)
        // A socket file left by a crashed run would look like a ready Ferry.
        try? FileManager.default.removeItem(atPath: controlPath(host.index))
        let process = try spawn(host.namespace, [binary] + ferryArguments(host, tunnel: tunnel, extra: extra), log: log)
        let path = controlPath(host.index)
        let ready = Lab.waitUntil(timeout: 15) {
            FileManager.default.fileExists(atPath: path) || !process.isRunning
        }
        guard ready, process.isRunning else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw CommandFailure(command: ["ferry"] + ferryArguments(host, tunnel: tunnel, extra: extra),
                                 status: process.isRunning ? -1 : process.terminationStatus,
                                 stderr: text.isEmpty ? "did not start within 15 s" : text)
        }
        return process
    }

    /// Stops Ferry on a host with SIGINT (so it logs its summary) and waits for it, bounded.
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
