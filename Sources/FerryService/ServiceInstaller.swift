import Foundation

/// `ferry service install` and `uninstall`: the unit, the instance's config, its drop-in, the
/// keys of Docker's daemon.json, and systemctl, all under `root` (`/` for the host itself; a
/// directory for tests and packaging, where systemctl is never run).
///
/// Everything is checked before anything is written: a refusal (a different file in the way,
/// daemon.json that is not JSON) changes nothing. What was done is recorded
/// (`InstallRecord`) and `uninstall` undoes that and nothing else; a file changed since it was
/// written is left in place and named.
public struct ServiceInstaller {
    /// What to install.
    public struct Request: Sendable {
        public var name: String
        /// The config file's bytes, copied to `/etc/ferry/NAME.yaml`.
        public var config: Data
        /// The config names a `user:` to become after set-up (the instance gets a drop-in).
        public var becomesUser: Bool
        /// Docker's bridge and MTU to write into daemon.json; nil: leave Docker alone.
        public var docker: (bridge: String, mtu: Int)?
        public init(name: String, config: Data, becomesUser: Bool = false, docker: (bridge: String, mtu: Int)? = nil) {
            self.name = name
            self.config = config
            self.becomesUser = becomesUser
            self.docker = docker
        }
    }

    public enum Failure: Error, CustomStringConvertible {
        case refused(String)
        case io(String)

        public var description: String {
            switch self {
            case .refused(let s), .io(let s): s
            }
        }
    }

    /// Runs `systemctl ARGS…`, throwing with its message when it fails.
    public typealias Systemctl = ([String]) throws -> Void

    public var root: String
    public var unit: ServiceUnit
    /// Replace a different unit, config or drop-in (uninstall puts the old one back).
    public var force = false
    /// Set when systemd runs this host (and `root` is `/`); nil: print what to run instead.
    public var systemctl: Systemctl?
    public static let dockerConfig = "/etc/docker/daemon.json"

    public init(root: String = "/", unit: ServiceUnit, force: Bool = false, systemctl: Systemctl? = nil) {
        self.root = root
        self.unit = unit
        self.force = force
        self.systemctl = systemctl
    }

    /// `path` (absolute, on the target) under `root`.
    public func onDisk(_ path: String) -> String {
        root == "/" ? path : (root.hasSuffix("/") ? String(root.dropLast()) : root) + path
    }

    var unitPath: String { "\(ServiceUnit.unitDirectory)/\(ServiceUnit.templateName)" }
    func configPath(_ name: String) -> String { "\(unit.configDirectory)/\(name).yaml" }
    func dropInPath(_ name: String) -> String { "\(ServiceUnit.unitDirectory)/\(ServiceUnit.instance(name)).d/user.conf" }
    func recordPath(_ name: String) -> String { InstallRecord.path(name: name, configDirectory: unit.configDirectory) }

    /// An instance name systemd takes as it is (no escaping), and that names a file.
    public static func checkName(_ name: String) throws(Failure) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
        guard !name.isEmpty, name.count <= 64, name.allSatisfy(allowed.contains), !name.hasPrefix("."), !name.hasPrefix("-") else {
            throw .refused("'\(name)' cannot name a service instance: use letters, digits, '_', '.' and '-' (up to 64, not first '.' or '-'), e.g. --name hostA")
        }
    }

    // MARK: Install

    /// Installs `request`; returns the lines to print (what was written, what to run next).
    public func install(_ request: Request) throws(Failure) -> [String] {
        try Self.checkName(request.name)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw .refused("--root \(root) is not a directory; make it first (mkdir -p \(root))")
        }
        let name = request.name
        var planned: [(path: String, text: String, previous: String?)] = []
        var report: [String] = []
        var wanted: [(String, String)] = [(unitPath, unit.text), (configPath(name), String(decoding: request.config, as: UTF8.self))]
        if request.becomesUser { wanted.append((dropInPath(name), ServiceUnit.userDropIn)) }
        if let existing = try readRecord(name) {
            // Installed already: the same again changes nothing; anything else is a new install.
            let same = wanted.allSatisfy { read($0.0) == $0.1 } && (request.docker == nil) == (existing.docker == nil)
            let dockerSame = try request.docker.map { d throws(Failure) in try dockerPlan(d).changes.isEmpty } ?? true
            guard same && dockerSame else {
                throw .refused("""
                    \(ServiceUnit.instance(name)) is installed already, otherwise (\(onDisk(recordPath(name)))); \
                    run `ferry service uninstall --name \(name)` first
                    """)
            }
            return ["\(ServiceUnit.instance(name)) is installed already as asked: nothing changed"]
        }
        for (path, text) in wanted {
            switch read(path) {
            case nil:
                planned.append((path, text, nil))
            case text?:
                report.append("\(onDisk(path)): as it should be already")
            case let other?:
                guard force else {
                    throw .refused("""
                        \(onDisk(path)) exists with other content; compare it with what Ferry would write \
                        (`ferry service install` prints nothing before it is sure), then move it away or give --force \
                        (uninstall puts it back)
                        """)
                }
                planned.append((path, text, other))
            }
        }
        let docker = try request.docker.map { d throws(Failure) in try dockerPlan(d) }

        // Written from here on; a failure takes back what was done.
        var record = InstallRecord(name: name)
        do throws(Failure) {
            for p in planned {
                try makeParents(of: p.path, record: &record)
                try write(p.text, to: p.path)
                record.files.append(.init(path: p.path, written: p.text, previous: p.previous))
                report.append("\(onDisk(p.path)): " + (p.previous == nil ? "written" : "replaced (the old one is kept in the record for uninstall)"))
            }
            if let docker, !docker.changes.isEmpty {
                var backup: String?
                if let original = docker.original {
                    let b = Self.dockerConfig + ".ferry-\(name).bak"
                    try write(original, to: b)
                    backup = b
                }
                record.docker = .init(path: Self.dockerConfig, backup: backup, changes: docker.changes)
                try makeParents(of: Self.dockerConfig, record: &record)
                try write(docker.text, to: Self.dockerConfig)
                let set = docker.changes.map { "\($0.key)=\($0.value)" + ($0.previous.map { " (was \($0))" } ?? "") }
                report.append("\(onDisk(Self.dockerConfig)): set \(set.joined(separator: ", "))" + (backup.map { "; backup in \(onDisk($0))" } ?? ""))
                report.append("Docker takes it at its next start (`systemctl restart docker`, which restarts its containers)")
            } else if docker != nil {
                report.append("\(onDisk(Self.dockerConfig)): bridge and mtu as they should be already")
            }
            try makeParents(of: recordPath(name), record: &record)
            try write(String(decoding: record.encoded(), as: UTF8.self), to: recordPath(name))
            if let systemctl {
                try run(systemctl, ["daemon-reload"])
                try run(systemctl, ["enable", ServiceUnit.instance(name)])
                record.enabled = true
                try write(String(decoding: record.encoded(), as: UTF8.self), to: recordPath(name))
                report.append("enabled \(ServiceUnit.instance(name)): it starts at boot; start it now with `systemctl start \(ServiceUnit.instance(name))`")
            } else if root == "/" {
                report.append("systemd is not running this host (no /run/systemd/system): nothing enabled.")
                report.append("To start Ferry at boot as the seed did, put these lines in /etc/rc.local:")
                report += unit.rcLocalLines(name: name).split(separator: "\n").map { "    " + $0 }
            } else {
                report.append("written under \(root); on the target host run `systemctl daemon-reload && systemctl enable \(ServiceUnit.instance(name))`")
            }
        } catch {
            _ = try? undo(record, others: [])
            throw error
        }
        return report
    }

    struct DockerPlan {
        var original: String?
        var text: String
        var changes: [DockerDaemonConfig.Change]
    }

    func dockerPlan(_ d: (bridge: String, mtu: Int)) throws(Failure) -> DockerPlan {
        let original = read(Self.dockerConfig)
        do {
            let (text, changes) = try DockerDaemonConfig.merge(original.map { Data($0.utf8) }, path: onDisk(Self.dockerConfig),
                                                               bridge: d.bridge, mtu: d.mtu)
            return DockerPlan(original: original, text: String(decoding: text, as: UTF8.self), changes: changes)
        } catch {
            throw .refused(error.description)
        }
    }

    // MARK: Uninstall

    /// The instances installed (their records), by name.
    public func installed() -> [String] {
        let dir = onDisk(unit.configDirectory)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { $0.hasSuffix(".install.json") }.map { String($0.dropLast(".install.json".count)) }.sorted()
    }

    /// Undoes what `install` did for `name` (the only instance installed when nil).
    public func uninstall(name: String?) throws(Failure) -> [String] {
        let all = installed()
        guard let name = name ?? (all.count == 1 ? all[0] : nil) else {
            throw .refused(all.isEmpty ? "no Ferry service is installed under \(onDisk(unit.configDirectory)) (no *.install.json)"
                                       : "several are installed (\(all.joined(separator: ", "))): say which with --name")
        }
        try Self.checkName(name)
        guard let record = try readRecord(name) else {
            throw .refused("\(ServiceUnit.instance(name)) was not installed by `ferry service install` (no \(onDisk(recordPath(name))))")
        }
        return try undo(record, others: all.filter { $0 != name })
    }

    /// Takes back `record`; a unit still used by the `others` stays, theirs to remove.
    func undo(_ record: InstallRecord, others: [String]) throws(Failure) -> [String] {
        var report: [String] = []
        let name = record.name
        if record.enabled, let systemctl {
            try run(systemctl, ["disable", "--now", ServiceUnit.instance(name)])
            report.append("stopped and disabled \(ServiceUnit.instance(name))")
        }
        if let docker = record.docker {
            let current = read(docker.path)
            do {
                let (text, kept, empty) = try DockerDaemonConfig.revert(current.map { Data($0.utf8) }, path: onDisk(docker.path),
                                                                        changes: docker.changes)
                if empty && docker.backup == nil {
                    try remove(docker.path)
                    report.append("\(onDisk(docker.path)): removed (Ferry had made it)")
                } else if let backup = docker.backup, let original = read(backup),
                          DockerDaemonConfig.sameObject(Data(original.utf8), text) {
                    // Back to what it was: the very bytes, its layout and key order kept.
                    try write(original, to: docker.path)
                    report.append("\(onDisk(docker.path)): put back as it was before install")
                } else {
                    try write(String(decoding: text, as: UTF8.self), to: docker.path)
                    report.append("\(onDisk(docker.path)): " + docker.changes.map(\.key).filter { !kept.contains($0) }.map { "\($0) reverted" }.joined(separator: ", "))
                }
                for key in kept { report.append("\(onDisk(docker.path)): \(key) left as it is: changed since install") }
            } catch {
                report.append("\(error); left as it is")
            }
            if let backup = docker.backup { try remove(backup) }
        }
        // The shared template goes with the last instance; another one takes over its record.
        var heir: InstallRecord?
        if let other = others.first { heir = try readRecord(other) }
        for file in record.files.reversed() {
            if file.path == unitPath, heir != nil {
                heir!.files.append(file)
                report.append("\(onDisk(file.path)): kept for \(ServiceUnit.instance(heir!.name))")
                continue
            }
            guard read(file.path) == file.written else {
                report.append("\(onDisk(file.path)): left as it is: changed since install")
                continue
            }
            if let previous = file.previous {
                try write(previous, to: file.path)
                report.append("\(onDisk(file.path)): put back as it was before install")
            } else {
                try remove(file.path)
                report.append("\(onDisk(file.path)): removed")
            }
        }
        if FileManager.default.fileExists(atPath: onDisk(recordPath(name))) { try remove(recordPath(name)) }
        // A directory still holding something (another instance's files) is the heir's to remove.
        var inherited: [String] = []
        for directory in record.directories.reversed() {
            let contents = (try? FileManager.default.contentsOfDirectory(atPath: onDisk(directory))) ?? ["?"]
            if contents.isEmpty { try remove(directory) } else { inherited.insert(directory, at: 0) }
        }
        if var h = heir {
            h.directories = inherited + h.directories.filter { !inherited.contains($0) }
            try write(String(decoding: h.encoded(), as: UTF8.self), to: recordPath(h.name))
        }
        if record.enabled, let systemctl { try run(systemctl, ["daemon-reload"]) }
        return report
    }

    // MARK: Files

    func read(_ path: String) -> String? {
        FileManager.default.contents(atPath: onDisk(path)).map { String(decoding: $0, as: UTF8.self) }
    }

    func readRecord(_ name: String) throws(Failure) -> InstallRecord? {
        guard let text = read(recordPath(name)) else { return nil }
        do {
            return try JSONDecoder().decode(InstallRecord.self, from: Data(text.utf8))
        } catch {
            throw .io("\(onDisk(recordPath(name))) cannot be read as an install record (\(error)); remove what it lists by hand")
        }
    }

    /// Writes through a temporary file renamed into place: a reader sees the old or the new.
    func write(_ text: String, to path: String) throws(Failure) {
        let target = onDisk(path)
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: target), options: .atomic)
        } catch {
            throw .io("cannot write \(target): \(error.localizedDescription)")
        }
    }

    func remove(_ path: String) throws(Failure) {
        do {
            try FileManager.default.removeItem(atPath: onDisk(path))
        } catch {
            throw .io("cannot remove \(onDisk(path)): \(error.localizedDescription)")
        }
    }

    /// Makes the missing directories above `path`, recording each.
    func makeParents(of path: String, record: inout InstallRecord) throws(Failure) {
        var missing: [String] = []
        var dir = (path as NSString).deletingLastPathComponent
        while dir != "/" && !dir.isEmpty && !FileManager.default.fileExists(atPath: onDisk(dir)) {
            missing.insert(dir, at: 0)
            dir = (dir as NSString).deletingLastPathComponent
        }
        for d in missing {
            do {
                try FileManager.default.createDirectory(atPath: onDisk(d), withIntermediateDirectories: false)
            } catch {
                throw .io("cannot make \(onDisk(d)): \(error.localizedDescription)")
            }
            record.directories.append(d)
        }
    }

    func run(_ systemctl: Systemctl, _ arguments: [String]) throws(Failure) {
        do {
            try systemctl(arguments)
        } catch {
            throw .io("systemctl \(arguments.joined(separator: " ")) failed: \(error)")
        }
    }
}
