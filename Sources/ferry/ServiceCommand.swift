import ArgumentParser
import FerryEngine
import FerryLinux
import FerryService
import FerrySettings
import Foundation

struct ServiceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service",
        abstract: "Make Ferry start at boot: a systemd unit per config file (and Docker on Ferry's bridge).",
        subcommands: [ServiceInstallCommand.self, ServiceUninstallCommand.self]
    )
}

struct ServiceInstallCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install",
        abstract: "Install ferry@NAME.service running `ferry run --config /etc/ferry/NAME.yaml`, and enable it.",
        discussion: """
            Copies the config to /etc/ferry/NAME.yaml (NAME: the file's name less .yaml, or --name), writes the \
            template unit /etc/systemd/system/ferry@.service (Type=notify, before docker.service, restarted on \
            failure, watchdog, sandboxed) and enables ferry@NAME when systemd runs the host; without systemd it \
            says so and prints the /etc/rc.local lines to use instead. With --docker, Docker's daemon.json gets \
            `bridge` and `mtu` from the config, every other key kept. `ferry service uninstall` undoes exactly this.
            """
    )

    @Option(name: .long, help: ArgumentHelp("The config file for ferry run (it must hold tap and local).", valueName: "file"))
    var config: String

    @Option(name: .long, help: ArgumentHelp("The instance's name (default: the config file's name less .yaml).", valueName: "name"))
    var name: String?

    @Option(name: .long, help: ArgumentHelp("Write under this directory instead of / (packaging, tests); runs no systemctl.",
                                            valueName: "dir"))
    var root: String?

    @Option(name: .long, help: ArgumentHelp("The ferry binary the unit runs (default: this one, /proc/self/exe).", valueName: "path"))
    var binary: String?

    @Flag(name: .long, help: "Also set `bridge` and `mtu` in Docker's /etc/docker/daemon.json (other keys are kept).")
    var docker = false

    @Flag(name: .long, help: "Replace a different unit, config or drop-in already there (uninstall puts it back).")
    var force = false

    func run() throws {
        let root = self.root ?? "/"
        let binary = self.binary ?? (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        guard binary.hasPrefix("/"), FileManager.default.isExecutableFile(atPath: binary) else {
            throw ValidationError("--binary '\(binary)' is not an executable file's absolute path; give the installed ferry, e.g. /usr/local/bin/ferry")
        }
        // The config is read as `ferry run` reads it: one that would not start is refused now.
        let settings: RunSettings
        do {
            settings = try RunSettings(options: RunOptions(), file: try ConfigFile.load(path: config))
        } catch {
            throw ValidationError("\(config) would not start ferry run: \(error.description)")
        }
        guard let bytes = FileManager.default.contents(atPath: config) else { throw ToolError("cannot read \(config)") }
        let name = self.name ?? ((config as NSString).lastPathComponent as NSString).deletingPathExtension
        var request = ServiceInstaller.Request(name: name, config: bytes, becomesUser: settings.user != nil)
        if docker { request.docker = try dockerSettings(settings) }

        let systemdRuns = root == "/" && FileManager.default.fileExists(atPath: "/run/systemd/system")
        let installer = ServiceInstaller(root: root, unit: ServiceUnit(binary: binary), force: force,
                                         systemctl: Systemctl.runner(if: systemdRuns))
        var lines: [String] = []
        if binary.hasPrefix("/root/") || binary.hasPrefix("/home/") {
            lines.append("warning: \(binary) is under a home directory, which the unit hides (ProtectHome=yes): copy it to /usr/local/bin and give --binary")
        }
        // ProtectSystem=strict: the service writes only under /run/ferry and /var/lib/ferry.
        for (what, path) in [("control", settings.control), ("capture", settings.capture.path)] {
            guard let path, !path.hasPrefix("/run/ferry/"), !path.hasPrefix("/var/lib/ferry/") else { continue }
            lines.append("warning: `\(what): \(path)` is outside /run/ferry and /var/lib/ferry, which the unit keeps read-only (ProtectSystem=strict): Ferry would fail to write it; put it under one of those")
        }
        lines += try installer.install(request)
        print(lines.joined(separator: "\n"))
    }

    /// Docker's bridge and MTU: the config's bridge, and the TAP's MTU (the config's `mtu`, else
    /// what `ferry run` would give the TAP on this host's underlay).
    func dockerSettings(_ settings: RunSettings) throws -> (bridge: String, mtu: Int) {
        guard let bridge = settings.layout.bridge ?? settings.device.bridge else {
            throw ValidationError("--docker needs the bridge Docker is to use: give `bridge:` in \(config)")
        }
        if let mtu = settings.device.mtu { return (bridge, mtu) }
        let e = settings.engine
        var underlay = e.underlayMTU
        if underlay == nil, let interface = NetworkInterface.holding(e.local) { underlay = try? NetworkInterface(interface).mtu() }
        guard let underlay else {
            throw ValidationError("""
                --docker needs the tunnel's MTU: \(e.local) is not on this host, so give `mtu:` (the TAP's) or `underlay-mtu:` in \(config)
                """)
        }
        return (bridge, DataPathLimits(configuration: e, underlayMTU: underlay).defaultTAPMTU(e))
    }
}

struct ServiceUninstallCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uninstall",
        abstract: "Undo `ferry service install`: disable the instance, remove its unit and config, revert daemon.json.",
        discussion: """
            Removes only what install wrote, and leaves (and names) a file changed since. The template unit goes \
            with the last instance.
            """
    )

    @Option(name: .long, help: ArgumentHelp("The instance (default: the only one installed).", valueName: "name"))
    var name: String?

    @Option(name: .long, help: ArgumentHelp("The directory install wrote under (default /).", valueName: "dir"))
    var root: String?

    func run() throws {
        let root = self.root ?? "/"
        let systemdRuns = root == "/" && FileManager.default.fileExists(atPath: "/run/systemd/system")
        // The binary does not matter to uninstall: the record says what was written.
        let installer = ServiceInstaller(root: root, unit: ServiceUnit(binary: "/"), systemctl: Systemctl.runner(if: systemdRuns))
        print(try installer.uninstall(name: name).joined(separator: "\n"))
    }
}

enum Systemctl {
    /// `run` when systemd runs this host (and the files go to /), else nil: print, do not run.
    static func runner(if systemdRuns: Bool) -> ServiceInstaller.Systemctl? {
        guard systemdRuns else { return nil }
        return { arguments in try run(arguments) }
    }

    /// `systemctl ARGS…`, its error output in the error when it fails.
    static func run(_ arguments: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/systemctl")
        p.arguments = arguments
        let errors = Pipe()
        p.standardError = errors
        try p.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw ToolError("exit \(p.terminationStatus): \(text)") }
    }
}
