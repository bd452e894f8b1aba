import FerryEngine
import FerryMembership
import FerryMetrics
import FerrySettings

/// `ferry run --metrics ADDRESS:PORT` (`metrics:` in the config): Prometheus's `/metrics`, bound
/// before the TAP is touched (a port in use ends the start with a message naming the address;
/// as root, so that a port below 1024 works with `--user`), served once privileges are dropped
/// (its thread is made then).
enum RunMetrics {
    static func bind(_ endpoint: Endpoint) throws -> MetricsServer {
        do {
            return try MetricsServer(host: endpoint.address.description, port: Int(endpoint.port))
        } catch {
            throw ToolError(error.description)
        }
    }

    /// With `membership` (`--etcd`), its figures too: etcd's reachability, the hosts, the revision.
    static func start(_ server: MetricsServer, engine: Engine, membership: MembershipAgent? = nil) throws {
        var figures: (@Sendable () -> MembershipFigures)? = nil
        if let agent = membership {
            figures = { @Sendable in
                let s = agent.status
                return MembershipFigures(reachable: s.reachable, hosts: s.hosts.count, revision: s.revision,
                                         registrations: s.registrations, relists: s.relists, outages: s.outages)
            }
        }
        do {
            try server.start(exporter: MetricsExporter(statistics: { engine.statistics() }, membership: figures))
        } catch {
            throw ToolError(error.description)
        }
    }
}
