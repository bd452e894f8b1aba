import FerryEngine
import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Why `/metrics` cannot be served at the address asked for.
public struct MetricsServerError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// An HTTP/1.1 server of one page, `/metrics` (`MetricsExporter`'s text), on SwiftNIO with
/// one event loop thread. GET only (405 otherwise), 404 for any other path; requests are
/// bounded in size (headers, body) and in time: each must be complete within
/// `Limits.requestTimeout` of its connection's opening or the previous response, or the
/// connection is closed, so that a client that connects and sends nothing (or sends slowly)
/// holds nothing for long; and at most `Limits.connections` are open at once.
///
/// In two steps, so that Ferry can drop its privileges in between with one thread: `init`
/// binds and listens (as root: any port; a refusal says which address), `start` makes the
/// event loop's thread and serves.
///
/// In a target of its own (not FerryControl): SwiftNIO is a large build that the control
/// socket, the engine and CI's sanitizer runs of the unit suites do without, and the data
/// plane never sees it.
public final class MetricsServer: Sendable {
    public struct Limits: Sendable {
        /// From a connection's opening, or its previous response, to a whole request.
        public var requestTimeout: TimeAmount = .seconds(10)
        public var connections = 64
        /// A header line, and all of a request's headers.
        public var headerFieldBytes = 8 << 10
        public var headerBytes = 16 << 10
        /// A GET carries no body; one longer than this is refused (413) and the connection closed.
        public var bodyBytes = 4 << 10
        public init() {}
    }

    /// The address and the port bound, for messages (`127.0.0.1:9108`, `[::1]:9108`).
    public let endpoint: String
    /// The port bound (the one asked for, or the kernel's choice for 0).
    public let port: Int
    public let limits: Limits
    private let socket: NIOBSDSocket.Handle
    private let state = EngineMutex(State.bound)

    private enum State {
        case bound
        case serving(MultiThreadedEventLoopGroup, Channel)
        case stopped
    }

    /// Binds `host` (an IPv4 or IPv6 address, brackets optional) and `port`, and listens.
    public init(host: String, port: Int, limits: Limits = Limits()) throws(MetricsServerError) {
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        func endpoint(_ port: Int) -> String { bare.contains(":") ? "[\(bare)]:\(port)" : "\(bare):\(port)" }
        let asked = endpoint(port)
        self.limits = limits
        let fix = "give --metrics (or metrics: in the config) a free port on an address of this host, e.g. 127.0.0.1:9108"
        let address: NIOCore.SocketAddress
        do {
            address = try SocketAddress(ipAddress: bare, port: port)
        } catch {
            throw MetricsServerError(description: "metrics address \(asked): '\(bare)' is not an IP address; \(fix)")
        }
        let family = address.protocol == .inet6 ? AF_INET6 : AF_INET
        let fd = Glibc.socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else {
            throw MetricsServerError(description: "cannot serve metrics on \(asked): socket: \(String(cString: strerror(errno)))")
        }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if family == AF_INET6 { _ = setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size)) }
        let bound = address.withSockAddr { sa, length in Glibc.bind(fd, sa, socklen_t(length)) }
        guard bound == 0, listen(fd, 64) == 0 else {
            let reason = errno == EADDRINUSE ? "the port is in use (another ferry, or another exporter?)"
                : errno == EADDRNOTAVAIL ? "no interface of this host has that address"
                : errno == EACCES ? "ports below 1024 need root or CAP_NET_BIND_SERVICE"
                : String(cString: strerror(errno))
            close(fd)
            throw MetricsServerError(description: "cannot serve metrics on \(asked): \(reason); \(fix)")
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        self.port = withUnsafeBytes(of: storage) { raw in
            // sin_port and sin6_port are both at offset 2, in network order.
            Int(UInt16(raw[2]) << 8 | UInt16(raw[3]))
        }
        self.endpoint = endpoint(self.port)
        socket = fd
    }

    /// Serves `exporter` from a thread of its own until `stop`. Once.
    public func start(exporter: MetricsExporter) throws(MetricsServerError) {
        guard state.withLock({ if case .bound = $0 { true } else { false } }) else {
            preconditionFailure("MetricsServer.start: started or stopped already")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let limits = self.limits
        let open = ConnectionCount()
        let bootstrap = ServerBootstrap(group: group)
            .childChannelOption(.allowRemoteHalfClosure, value: false)
            .childChannelInitializer { channel in
                // One thread: the initializer runs on the loop, as the handlers do.
                guard open.value.wrappingAdd(1, ordering: .relaxed).newValue <= limits.connections else {
                    open.value.wrappingSubtract(1, ordering: .relaxed)
                    return channel.eventLoop.makeFailedFuture(MetricsServerError(description: "too many connections"))
                }
                channel.closeFuture.whenComplete { _ in open.value.wrappingSubtract(1, ordering: .relaxed) }
                do {
                    var decoderLimits = NIOHTTPDecoderLimitConfiguration()
                    decoderLimits.maxHeaderFieldSize = limits.headerFieldBytes
                    decoderLimits.maxHeaderListSize = limits.headerBytes
                    decoderLimits.maxHeaderFieldCount = 64
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withEncoderConfiguration: HTTPResponseEncoder.Configuration(),
                        withDecoderLimitConfiguration: decoderLimits)
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(exporter: exporter, limits: limits))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        do {
            let channel = try bootstrap.withBoundSocket(socket).wait()
            state.withLock { $0 = .serving(group, channel) }
        } catch {
            try? group.syncShutdownGracefully()
            throw MetricsServerError(description: "cannot serve metrics on \(endpoint): \(error)")
        }
    }

    /// Stops serving and ends the thread (open connections are closed); a server never
    /// started closes its socket. Idempotent.
    public func stop() {
        let was = state.withLock { value in
            defer { value = .stopped }
            return value
        }
        switch was {
        case .bound:
            Glibc.close(socket)
        case .serving(let group, let channel):
            try? channel.close().wait()
            try? group.syncShutdownGracefully()
        case .stopped:
            break
        }
    }
}

/// The open connections (read and written on the event loop, and in `closeFuture`'s callback).
private final class ConnectionCount: Sendable {
    let value = Atomic<Int>(0)
}
