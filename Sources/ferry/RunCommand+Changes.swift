import FerryControl
import FerryEngine
import FerrySettings
import Foundation
import Logging

// What `ferry run` changes while it runs: the control socket's changes (`ferry ctl peer|fdb
// add|del`, `reload`) and SIGHUP, both through one `EngineControl`.
extension RunCommand {
    /// Who hears of peers added and removed at run time, to keep the host's routes to their
    /// container subnets in step (`FerryHost`'s route keeper, once it is there: wire it here);
    /// nil: nobody.
    static func peerChangeObserver(_ settings: RunSettings, _ logger: Logger) -> PeerChangeObserver? { nil }

    /// The control source of a run: the engine, the observer, and a reload of the config file
    /// the run was started with, resolved with the same command line over it.
    func engineControl(_ engine: Engine, settings: RunSettings, logLevel: SharedLogLevel, logger: Logger) -> EngineControl {
        let options = self.options
        var read: (@Sendable () -> Result<RunSettings, ControlChangeRefusal>)? = nil
        if let path = settings.configPath {
            read = { @Sendable () -> Result<RunSettings, ControlChangeRefusal> in
                do {
                    let file = try ConfigFile.load(path: path)
                    return .success(try RunSettings(options: options, file: file))
                } catch {
                    return .failure(ControlChangeRefusal("the config file \(path) was not reloaded, nothing changed: \(error)"))
                }
            }
        }
        return EngineControl(engine: engine, settings: settings, observer: Self.peerChangeObserver(settings, logger),
                             logLevel: logLevel, logger: logger, readSettings: read)
    }
}
