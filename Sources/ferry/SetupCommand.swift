import ArgumentParser
import FerryCapture
import FerryControl
import FerryEngine
import FerryHost
import FerrySettings
import FerryWire
import Logging
import Foundation

/// What `ferry setup` and `ferry teardown` share: where the layout comes from, and where the
/// record of what Ferry made lives.
struct HostLayoutOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The YAML file `ferry run --config` reads (its bridge, subnet and peer keys).",
                                            valueName: "file"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("The container bridge to create or adopt.", valueName: "name"))
    var bridge: String?

    @Option(name: .long, help: ArgumentHelp("This host's container subnet as the bridge's address, e.g. 172.18.0.1/16.",
                                            valueName: "address/length"))
    var subnet: String?

    @Option(name: .long, help: ArgumentHelp("A peer and its container subnet (a route onto the bridge); repeat for several.",
                                            valueName: "ip=subnet"))
    var peer: [String] = []

    @Option(name: .long, help: ArgumentHelp("""
        tunnel (default): peer subnets routed onto the bridge; routes: via each peer, which must be on-link; auto: via \
        the on-link peers, onto the bridge (the tunnel) for the others.
        """, valueName: "mode"))
    var mode: String?

    @Option(name: .long, help: ArgumentHelp("""
        Where the record of what setup made is kept (/run/ferry: it goes at a reboot, as do the bridge and routes it lists).
        """, valueName: "dir"))
    var stateDir: String = SetupRecordStore.defaultDirectory

    @Option(name: .long, help: ArgumentHelp("The record's name (default: the config file's name, else the bridge's).",
                                            valueName: "name"))
    var name: String?

    /// The layout: the command line over the config file (which may hold any of `ferry run`'s keys).
    func layout() throws -> SetupLayout {
        let file: ConfigFile?
        do { file = try config.map { (path) throws(SettingsError) in try ConfigFile.load(path: path) } } catch {
            throw ToolError(error.description)
        }
        var o = RunOptions()
        o.config = config
        o.bridge = bridge
        o.subnet = subnet
        o.peer = peer
        o.mode = mode
        let host: HostLayout
        do { host = try HostLayout(options: o, file: file) } catch { throw ValidationError(error.description) }
        do { return try SetupLayout(host, state: host.mode == .tunnel ? nil : try HostSetup.readState()) } catch {
            throw ToolError(error.description)
        }
    }

    var store: SetupRecordStore {
        get throws {
            let recordName = try name ?? config.map { (($0 as NSString).lastPathComponent as NSString).deletingPathExtension }
                ?? layout().bridge
            return SetupRecordStore(directory: stateDir, name: recordName)
        }
    }
}

struct SetupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "setup",
        abstract: "Create or adopt the container bridge, give it its address, bring it up, and route each peer's subnet onto it.",
        discussion: """
            Example (host A of the README picture):
              ferry setup --bridge bridge0 --subnet 172.18.0.1/16 --peer 192.168.99.101=172.17.0.0/16
            What setup makes is recorded (--state-dir), so that `ferry teardown` undoes exactly that; what it finds \
            in place is adopted and left alone. A second run changes nothing. Routes carry protocol \(RoutingProtocol.ferry) \
            (ip route show proto \(RoutingProtocol.ferry)).
            """
    )

    @OptionGroup var host: HostLayoutOptions

    @Flag(name: .long, help: "Print the equivalent ip commands; change nothing.")
    var dryRun = false

    func run() throws {
        let layout = try host.layout()
        let setup = HostSetup(store: try host.store)
        do {
            if dryRun {
                let steps = try setup.planSetup(layout)
                if steps.isEmpty { print("# nothing to change: \(Self.summary(layout))") }
                for step in steps { print(step.command) }
                return
            }
            let steps = try setup.setup(layout)
            if steps.isEmpty {
                print("nothing to change: \(Self.summary(layout))")
            } else {
                for step in steps { print(step.command) }
                print("\(steps.count) change\(steps.count == 1 ? "" : "s"), recorded in \(setup.store.path)")
            }
        } catch {
            throw ToolError(error.description)
        }
    }

    static func summary(_ layout: SetupLayout) -> String {
        "\(layout.bridge) is up" + (layout.address.map { " with \($0)" } ?? "")
            + ", with \(layout.routes.count) peer subnet route\(layout.routes.count == 1 ? "" : "s") in place"
    }
}

struct TeardownCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "teardown",
        abstract: "Undo what `ferry setup` made (by its record), and nothing else.",
        discussion: """
            A bridge setup adopted stays (only the address and up state setup gave it are undone); a route \
            the user made stays, even to a peer's subnet.
            """
    )

    @OptionGroup var host: HostLayoutOptions

    @Flag(name: .long, help: "Print the equivalent ip commands; change nothing.")
    var dryRun = false

    func run() throws {
        let setup = HostSetup(store: try host.store)
        do {
            let steps = dryRun ? try setup.planTeardown() : try setup.teardown()
            if steps.isEmpty { print((dryRun ? "# " : "") + "nothing to undo: what \(setup.store.path) lists is gone, or there is no record") }
            for step in steps { print(step.command) }
        } catch {
            throw ToolError(error.description)
        }
    }
}

extension RunCommand {
    /// `setup: true`: sets the host up as `ferry setup` would (record named after the config
    /// file, else the bridge, in /run/ferry) and returns what keeps the routes in step with the
    /// peers from then on; nil without `setup`. What it made stays when Ferry stops (as the
    /// bridge Docker uses must): `ferry teardown` with the same config removes it.
    /// Returns too the peers the tunnel carries (in auto mode, those not routed directly).
    /// Refuses, before changing anything, a routes or auto mode that leaves the tunnel no peer.
    func startSetup(_ settings: RunSettings, logger: Logger) throws -> (keeper: RouteKeeper, tunnelled: [IPAddress])? {
        guard settings.layout.setup else { return nil }
        let host = settings.layout
        let layout: SetupLayout
        do { layout = try SetupLayout(host, state: host.mode == .tunnel ? nil : try HostSetup.readState()) } catch {
            throw ToolError("set-up: \(error)")
        }
        if layout.tunnelled(host).isEmpty && !settings.engine.acceptAnyPeer && !settings.engine.peersAtRunTime {
            throw ToolError("every peer is routed directly (--mode \(host.mode.rawValue)): there is nothing to tunnel; "
                            + "`ferry setup --mode \(host.mode.rawValue)` alone puts the routes in place, with no daemon")
        }
        do {
            let name = settings.configPath.map { (($0 as NSString).lastPathComponent as NSString).deletingPathExtension } ?? layout.bridge
            let store = SetupRecordStore(name: name)
            let steps = try HostSetup(store: store).setup(layout)
            if steps.isEmpty {
                logger.info("set-up: nothing to change; \(SetupCommand.summary(layout))")
            } else {
                logger.info("set-up: \(steps.map(\.command).joined(separator: "; ")) (recorded in \(store.path))")
            }
            // With --user, routes follow peers after privileges are given up: the record is
            // kept open, since the run may then neither open it nor write in its directory.
            let kept = settings.user == nil ? store : try store.keepingOpen()
            return (RouteKeeper(layout: layout, store: kept), layout.tunnelled(host))
        } catch {
            throw ToolError("set-up: \(error)")
        }
    }
}

/// The engine as `ferry ctl` sees it when Ferry set the host up: its statistics carry the routes
/// the set-up installed (by the record, so routes kept in step at run time show too).
final class SetUpSource: WrappingControlSource {
    /// The run's control source: the engine, and the changes `ferry ctl` makes.
    let base: EngineControl
    let keeper: RouteKeeper
    var wrapped: any ControlSource { base }

    init(base: EngineControl, keeper: RouteKeeper) {
        self.base = base
        self.keeper = keeper
    }

    func statistics() -> Statistics {
        var s = base.statistics()
        s.hostRoutes = keeper.installed.map(\.description)
        return s
    }
}
