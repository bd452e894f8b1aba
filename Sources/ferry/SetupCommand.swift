import ArgumentParser
import FerryHost
import FerryWire
import Foundation
import Yams

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
        Where the record of what setup made is kept (/run/ferry: it goes at a reboot, as do the bridge and routes it lists).
        """, valueName: "dir"))
    var stateDir: String = SetupRecordStore.defaultDirectory

    @Option(name: .long, help: ArgumentHelp("The record's name (default: the config file's name, else the bridge's).",
                                            valueName: "name"))
    var name: String?

    /// The layout: the command line over the config file.
    func layout() throws -> SetupLayout {
        let file = try config.map(RunSettings.loadConfig) ?? [:]
        func text(_ key: String) -> String? { file[key].map(RunSettings.text) }
        guard let bridge = bridge ?? text("bridge") else {
            throw ValidationError("give the container bridge with --bridge NAME (or `bridge:` in the config file)")
        }
        var address: BridgeAddress?
        if let s = subnet ?? text("subnet") {
            guard let a = BridgeAddress(s) else {
                throw ValidationError("--subnet '\(s)' is not the bridge's ADDRESS/LENGTH, e.g. 172.18.0.1/16")
            }
            address = a
        }
        var peers: [String] = peer
        if peers.isEmpty {
            switch file["peer"] {
            case let list as [Any]: peers = try list.map(Self.peerText)
            case let one?: peers = [try Self.peerText(one)]
            case nil: break
            }
        }
        let routes = try peers.compactMap { text -> PeerRoute? in
            let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
            let address = try Parse.address(parts[0])
            guard parts.count == 2 else { return nil }
            do {
                return PeerRoute(peer: address, subnet: try IPPrefix(parsing: parts[1]))
            } catch {
                throw ValidationError("--peer \(text): the subnet \(error)")
            }
        }
        return SetupLayout(bridge: bridge, address: address, routes: routes)
    }

    /// A peer of the file: an address, ADDRESS=SUBNET, or a mapping {address, subnet}.
    static func peerText(_ item: Any) throws -> String {
        if let map = item as? [String: Any] {
            guard let a = map["address"] else { throw ValidationError("a peer in the config file has no `address`") }
            return RunSettings.text(a) + (map["subnet"].map { "=" + RunSettings.text($0) } ?? "")
        }
        return RunSettings.text(item)
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
            if steps.isEmpty { print(dryRun ? "# nothing to undo" : "nothing to undo (no record at \(setup.store.path))") }
            for step in steps { print(step.command) }
        } catch {
            throw ToolError(error.description)
        }
    }
}
