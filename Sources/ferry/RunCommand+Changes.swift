import FerryControl
import FerryEngine
import FerryHost
import FerrySettings
import Foundation
import Logging

// What `ferry run` changes while it runs: the control socket's changes (`ferry ctl peer|fdb
// add|del`, `reload`) and SIGHUP, both through one `EngineControl`.
extension RunCommand {
    /// Who hears of peers added and removed at run time: with set-up (`setup: true`), the
    /// route keeper, which keeps the host's routes to their container subnets in step.
    static func peerChangeObserver(_ settings: RunSettings, routeKeeper: RouteKeeper?, _ logger: Logger) -> PeerChangeObserver? {
        routeKeeper.map { RouteObserver(keeper: $0, mode: settings.layout.mode, logger: logger) }
    }

    /// The control source of a run: the engine, the observer, and a reload of the config file
    /// the run was started with, resolved with the same command line over it.
    /// `options`: those the run resolved (with what etcd filled in); `livePeers`: with
    /// membership, the peers as they stand, which a reload keeps (etcd, not the file, has them).
    func engineControl(_ engine: Engine, settings: RunSettings, routeKeeper: RouteKeeper?, logLevel: SharedLogLevel,
                       logger: Logger, options: RunOptions? = nil,
                       livePeers: (@Sendable () -> [PeerSpec])? = nil) -> EngineControl {
        let tunnelled = Set(engine.configuration.peers)
        let options = options ?? self.options
        var read: (@Sendable () -> Result<RunSettings, ControlChangeRefusal>)? = nil
        if let path = settings.configPath {
            read = { @Sendable () -> Result<RunSettings, ControlChangeRefusal> in
                do {
                    let file = try ConfigFile.load(path: path)
                    var new = try RunSettings(options: options, file: file)
                    if let livePeers {
                        new.layout.peers = livePeers()
                        new.engine.peers = new.layout.peers.map(\.address)
                    }
                    return .success(new)
                } catch {
                    return .failure(ControlChangeRefusal("the config file \(path) was not reloaded, nothing changed: \(error)"))
                }
            }
        }
        return EngineControl(engine: engine, settings: settings,
                             routedDirectly: settings.layout.peers.map(\.address).filter { !tunnelled.contains($0) }, observer: Self.peerChangeObserver(settings, routeKeeper: routeKeeper, logger),
                             logLevel: logLevel, logger: logger, readSettings: read)
    }
}

/// The route keeper as the control side's observer: each peer's subnet routed when it joins
/// (onto the bridge; in auto mode via the peer when it is on-link), its route removed when it
/// leaves; each change logged with the `ip` commands it amounts to.
final class RouteObserver: PeerChangeObserver {
    let keeper: RouteKeeper
    let mode: NetworkMode
    let logger: Logger

    init(keeper: RouteKeeper, mode: NetworkMode, logger: Logger) {
        self.keeper = keeper
        self.mode = mode
        self.logger = logger
    }

    func peerAdded(_ peer: PeerSpec) throws {
        let steps = try keeper.peerAdded(peer, mode: mode)
        if !steps.isEmpty { logger.info("routes: \(steps.map(\.command).joined(separator: "; "))") }
    }

    func peerRemoved(_ peer: PeerSpec) throws {
        let steps = try keeper.peerRemoved(peer)
        if !steps.isEmpty { logger.info("routes: \(steps.map(\.command).joined(separator: "; "))") }
    }

    func routesDirectly(_ peer: PeerSpec) throws -> Bool { try keeper.routesDirectly(peer, mode: mode) }
}
