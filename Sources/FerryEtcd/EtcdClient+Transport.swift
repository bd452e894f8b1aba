import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

// How a request reaches etcd: the members in order of preference, each with its own deadline
// inside the operation's, the token when authentication is on, and the mapping of the
// gateway's answers to `EtcdError`.

extension EtcdClient {
    /// What became of one request at one member.
    enum Attempt: Error, Sendable {
        /// HTTP 200 and its body.
        case answered([UInt8])
        /// etcd answered with an error (any other status) and its decoded body.
        case refused(status: Int, WireError)
        /// The member did not answer usefully; `mayHaveApplied` when the request may have been
        /// received (a timeout or a broken connection after sending), rather than refused at
        /// connection time.
        case failed(String, mayHaveApplied: Bool)
    }

    /// What a unary call returns: the body of the 200 answer, and whether an earlier attempt at
    /// another member failed in a way that may have applied the request there.
    struct Answer: Sendable {
        var body: [UInt8]
        var afterUncertainAttempt: Bool
        /// The member that answered.
        var endpoint: Endpoint
    }

    /// Posts `body` to `path` (`/v3/kv/range`, …) at the first member that answers, setting
    /// aside those that fail. `leaseID`: an answer "lease not found" throws `.leaseNotFound`.
    func unary(_ path: String, _ body: [UInt8], leaseID: Int64? = nil) async throws(EtcdError) -> Answer {
        let operationDeadline = ContinuousClock.now + configuration.operationTimeout
        var report: [String] = []
        var uncertain = false
        for endpoint in endpointsInOrder() {
            guard ContinuousClock.now < operationDeadline else {
                report.append("\(endpoint): not tried (the operation's \(configuration.operationTimeout) had passed)")
                continue
            }
            var reauthenticated = false
            while true {
                let attempt = await post(path, body, to: endpoint, until: operationDeadline, collecting: true)
                switch attempt {
                case .answered(let bytes):
                    markAnswered(endpoint)
                    return Answer(body: bytes, afterUncertainAttempt: uncertain, endpoint: endpoint)
                case .refused(let status, let error):
                    if status == 401, configuration.user != nil, !reauthenticated {
                        // The token expired (or the member restarted): once more with a new one.
                        reauthenticated = true
                        dropToken()
                        continue
                    }
                    if status >= 500 {
                        // Unavailable (no leader), timed out inside etcd: another member may do.
                        report.append("\(endpoint): \(Self.describe(error, status: status))")
                        setAside(endpoint)
                        uncertain = uncertain || status == 504 || status == 500
                        break
                    }
                    if error.code == 5, let leaseID { throw .leaseNotFound(leaseID) }
                    throw .refused(Self.describe(error, status: status))
                case .failed(let why, let mayHaveApplied):
                    report.append("\(endpoint): \(why)")
                    setAside(endpoint)
                    uncertain = uncertain || mayHaveApplied
                }
                break
            }
        }
        throw .unavailable(report.joined(separator: "; "))
    }

    /// One POST to one member, bounded by the request timeout and `operationDeadline`; with
    /// `collecting`, the body is read whole within that deadline. Authenticates first when a
    /// user is configured and there is no token.
    func post(_ path: String, _ body: [UInt8], to endpoint: Endpoint, until operationDeadline: ContinuousClock.Instant,
              collecting: Bool) async -> Attempt {
        let deadline = min(ContinuousClock.now + configuration.requestTimeout, operationDeadline)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        if configuration.user != nil {
            switch await token(at: endpoint, until: deadline) {
            case .success(let token): headers.add(name: "Authorization", value: token)
            case .failure(let attempt): return attempt
            }
        }
        return await Self.exchange(http, url: endpoint.url + path, headers: headers, body: body, deadline: deadline,
                                   timeout: configuration.requestTimeout)
    }

    /// The POST itself, with its deadline: the head within AsyncHTTPClient's deadline, the body
    /// read whole in a race with the same deadline.
    static func exchange(_ http: HTTPClient, url: String, headers: HTTPHeaders, body: [UInt8],
                         deadline: ContinuousClock.Instant, timeout: Duration) async -> Attempt {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers = headers
        request.body = .bytes(ByteBuffer(bytes: body))
        let remaining = deadline - ContinuousClock.now
        guard remaining > .zero else { return .failed("no time left for the request", mayHaveApplied: false) }
        let nioDeadline = NIODeadline.now() + .nanoseconds(Self.nanoseconds(remaining))
        let prepared = request
        do {
            return try await withThrowingTaskGroup(of: Attempt?.self) { group in
                group.addTask {
                    let response = try await http.execute(prepared, deadline: nioDeadline)
                    let bytes = try await response.body.collect(upTo: 64 << 20)
                    let data = Array(bytes.readableBytesView)
                    guard response.status == .ok else {
                        let error = (try? JSONDecoder().decode(WireError.self, from: Data(data)))
                            ?? WireError(error: nil, message: "HTTP \(response.status.code): \(String(decoding: data.prefix(200), as: UTF8.self))", code: nil)
                        return .refused(status: Int(response.status.code), error)
                    }
                    return .answered(data)
                }
                group.addTask {
                    try await Task.sleep(until: deadline, clock: .continuous)
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let attempt = first else {
                    return .failed("no answer within \(timeout)", mayHaveApplied: true)
                }
                return attempt
            }
        } catch {
            if Task.isCancelled { return .failed("cancelled", mayHaveApplied: true) }
            return Self.failure(error)
        }
    }

    /// A transport error as a failed attempt: refused connections and connection timeouts
    /// cannot have applied the request; anything else may have.
    static func failure(_ error: any Error) -> Attempt {
        if let error = error as? HTTPClientError {
            if error == .connectTimeout { return .failed("no connection within the connect timeout", mayHaveApplied: false) }
            if error == .deadlineExceeded { return .failed("no answer before the deadline", mayHaveApplied: true) }
            if error == .remoteConnectionClosed { return .failed("the connection was closed", mayHaveApplied: true) }
        }
        let text = String(describing: error)
        let refused = text.contains("refused") || text.contains("NIOConnectionError") || text.contains("unreachable")
        return .failed(refused ? "connection refused (\(text))" : text, mayHaveApplied: !refused)
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        let (s, a) = d.components
        return s * 1_000_000_000 + a / 1_000_000_000
    }

    static func describe(_ error: WireError, status: Int) -> String {
        let message = error.message ?? error.error ?? "HTTP \(status)"
        if message.contains("user name is empty") {
            return "\(message) (etcd's authentication is on: give --etcd-user and --etcd-password-file)"
        }
        return message
    }

    // MARK: - Members in order, and set aside

    /// The members to try, best first: the one that answered last, then the others in the
    /// configured order, then those set aside (the longest set aside first).
    func endpointsInOrder() -> [Endpoint] {
        let now = ContinuousClock.now
        let (preferred, setAside) = state.withLockedValue { ($0.preferred, $0.setAside) }
        let all = configuration.endpoints
        let rotated = Array(all[preferred...] + all[..<preferred])
        let fresh = rotated.filter { e in setAside[e].map { now - $0 >= configuration.setAsideInterval } ?? true }
        let aside = rotated.filter { !fresh.contains($0) }.sorted { setAside[$0]! < setAside[$1]! }
        return fresh + aside
    }

    func setAside(_ endpoint: Endpoint) {
        state.withLockedValue { $0.setAside[endpoint] = ContinuousClock.now }
    }

    func markAnswered(_ endpoint: Endpoint) {
        state.withLockedValue { state in
            state.setAside[endpoint] = nil
            if let i = configuration.endpoints.firstIndex(of: endpoint) { state.preferred = i }
        }
    }

    // MARK: - Authentication

    func dropToken() {
        state.withLockedValue { $0.token = nil }
    }

    /// The token to send: the one held, or a new one from `/v3/auth/authenticate` at `endpoint`.
    func token(at endpoint: Endpoint, until deadline: ContinuousClock.Instant) async -> Result<String, Attempt> {
        if let token = state.withLockedValue({ $0.token }) { return .success(token) }
        let body = Wire.json(["name": configuration.user ?? "", "password": configuration.password ?? ""])
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        let attempt = await Self.exchange(http, url: endpoint.url + "/v3/auth/authenticate", headers: headers, body: body,
                                          deadline: deadline, timeout: configuration.requestTimeout)
        switch attempt {
        case .answered(let bytes):
            guard let token = (try? Wire.decode(WireAuthenticateResponse.self, bytes))?.token, !token.isEmpty else {
                return .failure(.refused(status: 400, WireError(error: nil, message:
                    "etcd's authentication is off (no token given for user \(configuration.user ?? "")): drop --etcd-user and --etcd-password-file, or enable it (etcdctl auth enable)", code: 3)))
            }
            state.withLockedValue {
                $0.token = token
                $0.authentications += 1
            }
            return .success(token)
        case .refused(let status, var error):
            error.message = "authenticating as \(configuration.user ?? ""): \(Self.describe(error, status: status))"
            return .failure(.refused(status: status == 401 ? 403 : status, error))
        case .failed:
            return .failure(attempt)
        }
    }
}
