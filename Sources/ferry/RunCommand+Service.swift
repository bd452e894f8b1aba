import FerryEngine
import FerryService
import Foundation
import Logging

/// `ferry run` under a service manager (`Type=notify`): READY=1 once the engine forwards,
/// STATUS= lines, STOPPING=1 on the way out, and WATCHDOG=1 while every worker turns.
extension ServiceNotifier {
    /// For `ferry run`: the environment's socket, failures to the log.
    static func forRun(logger: Logger) -> ServiceNotifier {
        ServiceNotifier(onError: { [logger] in logger.warning("\($0)") })
    }

    /// Says READY=1 once every worker has made a turn of its loop (the TAP is up on its bridge
    /// and the sockets are open before that: the engine forwards), waiting at most 10 s; then
    /// starts the watchdog, if the unit asked for one.
    func announce(_ engine: Engine, logger: Logger) {
        guard isEnabled else { return }
        let deadline = Date().addingTimeInterval(10)
        while !engine.heartbeats.allStarted && !engine.isStopping && Date() < deadline { usleep(1000) }
        guard !engine.isStopping else { return }
        let c = engine.configuration
        ready(status: "forwarding on \(engine.tap.name) (\(describe(c))), \(c.peers.count) peers, \(engine.workers.count) workers")
        let watch = WorkerHeartbeats.Watch(engine.heartbeats)
        startWatchdog(check: { [engine] in
            if engine.isStopping { return .failing("the engine is stopping") }
            let stalled = watch.stalledWorkers()
            guard stalled.isEmpty else {
                return .failing("worker \(stalled.map(String.init).joined(separator: ",")) made no progress for a watchdog interval")
            }
            return .alive
        }, onChange: { [self, logger] health in
            switch health {
            case .alive:
                logger.notice("every worker turns again: watchdog keep-alives resume")
                status("forwarding")
            case .failing(let why):
                logger.error("\(why): no watchdog keep-alive, so that systemd restarts Ferry if it lasts")
                status("stalled: \(why)")
            }
        })
        if let interval = watchdogInterval { logger.info("watchdog keep-alive every \(interval) while every worker turns") }
    }
}
