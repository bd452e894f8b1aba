import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// etcd's v3 API over its HTTP/JSON gateway (`/v3/kv/*`, `/v3/lease/*`, `/v3/watch`), as a
/// `KeyValueStore`.
///
/// Several members may be given: each request goes to the one that answered last, and a member
/// that fails (refuses the connection, does not answer within `requestTimeout`, answers
/// "unavailable") is set aside for `setAsideInterval` and the next one tried, all within
/// `operationTimeout`; `.unavailable` then lists each member and what happened there. https
/// endpoints use TLS (the configured CA, and a client certificate when given); with a user and
/// a password the client authenticates (`/v3/auth/authenticate`) and sends the token, and
/// authenticates again once when a member refuses it.
///
/// A retried `create` whose earlier attempt may have been applied (a timeout after sending)
/// counts as created when the key then holds exactly its value and lease.
///
/// Call `shutdown()` when done: it ends every request and watch still running, and returns when
/// the connections are closed. A client released without it shuts down in the background.
///
/// Making a client starts no thread: the HTTP client (and SwiftNIO's event loop threads under
/// it) starts with the first request, so that `ferry run --user` can load the TLS files while
/// it is still root and give privileges up, as it must, while it is the one thread.
public final class EtcdClient: KeyValueStore {
    public let configuration: Configuration
    let httpConfiguration: HTTPClient.Configuration
    /// The HTTP client, made by the first request (`http`), and whether `shutdown()` was
    /// called: a request after it gets a client made and shut down at once (it fails).
    let started = NIOLockedValueBox<(client: HTTPClient?, shutDown: Bool)>((nil, false))

    var http: HTTPClient {
        started.withLockedValue { state in
            if let client = state.client { return client }
            let made = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
            if state.shutDown { made.shutdown().whenComplete { _ in } } else { state.client = made }
            return made
        }
    }

    struct State {
        /// Index in `configuration.endpoints` of the member that answered last.
        var preferred = 0
        /// Members set aside, and since when.
        var setAside: [Endpoint: ContinuousClock.Instant] = [:]
        var token: String?
        /// Tokens taken so far (a test's view of re-authentication).
        var authentications = 0
    }

    let state = NIOLockedValueBox(State())

    /// A client for `configuration` (validated first). Throws when a TLS file cannot be loaded.
    public init(configuration: Configuration) throws(ConfigurationError) {
        try configuration.validate()
        self.configuration = configuration
        var http = HTTPClient.Configuration()
        http.httpVersion = .http1Only
        http.timeout = .init(connect: .nanoseconds(Self.nanoseconds(configuration.connectTimeout)))
        // A connection that cannot be made fails its request at once: the fail-over to the next
        // member, the set-aside and the callers' back-off are this client's. AsyncHTTPClient's
        // own retry (with a back-off of its own, until the connect timeout) made a member whose
        // etcd was gone cost the connect timeout before the next was tried (1 s in the tests'
        // fail-over, 0.01-0.03 s without); and once the network came back (a blackholed route
        // removed) its back-off, grown while the route was gone, still failed the next requests
        // with the old error until the connect timeout (a lapsed lease was taken again seconds late).
        http.connectionPool.retryConnectionEstablishment = false
        http.redirectConfiguration = .disallow
        http.decompression = .disabled
        if configuration.endpoints.contains(where: \.tls) {
            var tls = TLSConfiguration.makeClientConfiguration()
            if let ca = configuration.caFile {
                // Read now, as the client certificate and key are: not at the first handshake.
                let roots: [NIOSSLCertificate]
                do { roots = try NIOSSLCertificate.fromPEMFile(ca) } catch {
                    throw ConfigurationError("cannot load the CA \(ca): \(error); it must be PEM")
                }
                guard !roots.isEmpty else { throw ConfigurationError("the CA file \(ca) holds no certificate (PEM, BEGIN CERTIFICATE)") }
                tls.trustRoots = .certificates(roots)
            }
            if let certificate = configuration.certificateFile, let key = configuration.keyFile {
                do {
                    tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
                    tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
                } catch {
                    throw ConfigurationError("cannot load the client certificate \(certificate) or its key \(key): \(error); both must be PEM")
                }
            }
            http.tlsConfiguration = tls
        }
        httpConfiguration = http
    }

    /// Ends every request and watch, and releases the connections. Call it once, last.
    public func shutdown() async {
        let client = started.withLockedValue { state in
            state.shutDown = true
            return state.client
        }
        try? await client?.shutdown()
    }

    deinit {
        // AsyncHTTPClient traps (in debug builds) on a client released before its shutdown;
        // after `shutdown()` this one only fails, quietly.
        started.withLockedValue { $0.client }?.shutdown().whenComplete { _ in }
    }

    // MARK: - KeyValueStore

    public func range(prefix: String) async throws(EtcdError) -> EtcdSnapshot {
        let body = Wire.json(["key": Wire.base64(prefix.isEmpty ? "\0" : prefix),
                              "range_end": Wire.base64(Wire.rangeEnd(prefix: prefix))])
        let reply = try Wire.decode(WireRangeResponse.self, try await unary("/v3/kv/range", body).body)
        var keyValues: [EtcdKeyValue] = []
        for kv in reply.kvs ?? [] { keyValues.append(try kv.keyValue()) }
        return EtcdSnapshot(keyValues: keyValues, revision: try Self.revision(reply.header))
    }

    public func get(_ key: String) async throws(EtcdError) -> (keyValue: EtcdKeyValue?, revision: Int64) {
        let body = Wire.json(["key": Wire.base64(key)])
        let reply = try Wire.decode(WireRangeResponse.self, try await unary("/v3/kv/range", body).body)
        return (try reply.kvs?.first?.keyValue(), try Self.revision(reply.header))
    }

    @discardableResult
    public func put(_ key: String, value: [UInt8], lease: Int64) async throws(EtcdError) -> Int64 {
        var request: [String: Any] = ["key": Wire.base64(key), "value": Wire.base64(value)]
        if lease != 0 { request["lease"] = String(lease) }
        let reply = try Wire.decode(WireWriteResponse.self, try await unary("/v3/kv/put", Wire.json(request),
                                                                             leaseID: lease == 0 ? nil : lease).body)
        return try Self.revision(reply.header)
    }

    public func create(_ key: String, value: [UInt8], lease: Int64) async throws(EtcdError) -> Bool {
        var put: [String: Any] = ["key": Wire.base64(key), "value": Wire.base64(value)]
        if lease != 0 { put["lease"] = String(lease) }
        // If the key has never been written (version 0) put it; else read it, so that a retry
        // after an attempt that may have been applied can tell its own write.
        let body = Wire.json([
            "compare": [["target": "VERSION", "result": "EQUAL", "key": Wire.base64(key), "version": "0"]],
            "success": [["request_put": put]],
            "failure": [["request_range": ["key": Wire.base64(key)]]],
        ])
        let answer = try await unary("/v3/kv/txn", body, leaseID: lease == 0 ? nil : lease)
        let reply = try Wire.decode(WireTxnResponse.self, answer.body)
        if reply.succeeded == true { return true }
        guard answer.afterUncertainAttempt,
              let existing = try reply.responses?.first?.response_range?.kvs?.first?.keyValue() else { return false }
        return existing.value == value && existing.lease == lease && existing.version == 1
    }

    @discardableResult
    public func delete(_ key: String) async throws(EtcdError) -> Bool {
        let body = Wire.json(["key": Wire.base64(key)])
        let reply = try Wire.decode(WireWriteResponse.self, try await unary("/v3/kv/deleterange", body).body)
        return (reply.deleted?.value ?? 0) > 0
    }

    public func grantLease(ttl: Int) async throws(EtcdError) -> EtcdLease {
        let reply = try Wire.decode(WireLeaseResponse.self, try await unary("/v3/lease/grant", Wire.json(["TTL": String(ttl)])).body)
        guard let id = reply.ID?.value, id != 0 else { throw .malformedReply("a lease grant without an ID") }
        return EtcdLease(id: id, ttl: Int(reply.TTL?.value ?? Int64(ttl)))
    }

    public func keepAlive(_ lease: Int64) async throws(EtcdError) -> Int {
        // A stream of one request: one message back, `{"result": {"ID": …, "TTL": …}}`, with
        // no TTL (0) when the lease is gone.
        let answer = try await unary("/v3/lease/keepalive", Wire.json(["ID": String(lease)]), leaseID: lease)
        var splitter = JSONObjectSplitter()
        let messages: [[UInt8]]
        do { messages = try splitter.feed(answer.body) } catch { throw .malformedReply(error.description) }
        guard let first = messages.first else { throw .malformedReply("an empty keepalive reply") }
        let message = try Wire.decode(WireStreamMessage<WireLeaseResponse>.self, first)
        if let error = message.error {
            let text = error.message ?? "keepalive failed (gRPC code \(error.grpc_code ?? 0))"
            switch error.grpc_code {
            case 5: throw .leaseNotFound(lease)
            // No leader, or timed out inside etcd: the member cannot serve now (the next
            // keepalive starts with another).
            case 4, 14:
                setAside(answer.endpoint)
                throw .unavailable("\(answer.endpoint): \(text)")
            default: throw .refused(text)
            }
        }
        let ttl = message.result?.TTL?.value ?? 0
        guard ttl > 0 else { throw .leaseNotFound(lease) }
        return Int(ttl)
    }

    public func revokeLease(_ lease: Int64) async throws(EtcdError) {
        do {
            _ = try await unary("/v3/lease/revoke", Wire.json(["ID": String(lease)]), leaseID: lease)
        } catch .leaseNotFound {
            // Lapsed or revoked already: what was asked.
        }
    }

    static func revision(_ header: WireHeader?) throws(EtcdError) -> Int64 {
        guard let revision = header?.revision?.value else { throw .malformedReply("a reply without the store's revision") }
        return revision
    }
}
