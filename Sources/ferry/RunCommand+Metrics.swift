import ArgumentParser
import FerryEngine
import FerryMetrics

/// `ferry run --metrics ADDRESS:PORT`: Prometheus's `/metrics`, bound before the TAP is touched
/// (a port in use ends the start with a message naming the address; as root, so that a port
/// below 1024 works with `--user`), served once privileges are dropped (its thread is made then).
enum RunMetrics {
    /// `ADDRESS:PORT` or `[IPV6]:PORT` into the address and the port.
    static func endpoint(_ text: String) throws -> (host: String, port: Int) {
        let fix = "write --metrics ADDRESS:PORT, e.g. 127.0.0.1:9108 or [::1]:9108"
        guard let colon = text.lastIndex(of: ":") else { throw ValidationError("--metrics '\(text)' has no port; \(fix)") }
        var host = String(text[..<colon])
        let portText = text[text.index(after: colon)...]
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
        } else if host.contains(":") {
            throw ValidationError("--metrics '\(text)': put an IPv6 address in brackets; \(fix)")
        }
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw ValidationError("--metrics '\(text)': '\(portText)' is not a port (1 to 65535); \(fix)")
        }
        guard !host.isEmpty else { throw ValidationError("--metrics '\(text)' has no address; \(fix)") }
        return (host, port)
    }

    static func bind(_ text: String) throws -> MetricsServer {
        let (host, port) = try endpoint(text)
        do {
            return try MetricsServer(host: host, port: port)
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
