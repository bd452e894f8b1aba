import FerryEngine
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

    static func start(_ server: MetricsServer, engine: Engine) throws {
        do {
            try server.start(exporter: MetricsExporter { engine.statistics() })
        } catch {
            throw ToolError(error.description)
        }
    }
}
