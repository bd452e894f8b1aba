import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

extension EtcdClient {
    /// Watches `prefix` from `revision` on one member (the first that accepts the watch, in the
    /// order requests use), reading the streamed reply as it comes. Until the watch is created
    /// a failing member is set aside and the next tried; once it is created, the stream ending
    /// or failing ends the sequence with `.unavailable` (the caller re-lists, then watches
    /// again), and a cancellation by etcd for compaction with `.compacted`. Cancelling the task
    /// that consumes the sequence (or dropping it) ends the HTTP request.
    public func watch(prefix: String, from revision: Int64) -> AsyncThrowingStream<EtcdWatchBatch, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: EtcdWatchBatch.self, throwing: (any Error).self)
        let task = Task {
            do {
                try await self.runWatch(prefix: prefix, from: revision, continuation)
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    private enum WatchEnd: Error {
        /// etcd refused the token: authenticate again and re-create the watch on that member.
        case tokenRefused
    }

    func runWatch(prefix: String, from revision: Int64,
                  _ continuation: AsyncThrowingStream<EtcdWatchBatch, any Error>.Continuation) async throws(EtcdError) {
        var create: [String: Any] = ["key": Wire.base64(prefix.isEmpty ? "\0" : prefix),
                                     "range_end": Wire.base64(Wire.rangeEnd(prefix: prefix))]
        if revision > 0 { create["start_revision"] = String(revision) }
        let body = Wire.json(["create_request": create])
        var count = create
        count["start_revision"] = nil
        count["count_only"] = true
        let check = Wire.json(count)
        let operationDeadline = ContinuousClock.now + configuration.operationTimeout
        var report: [String] = []
        for endpoint in endpointsInOrder() {
            guard ContinuousClock.now < operationDeadline else {
                report.append("\(endpoint): not tried (the operation's \(configuration.operationTimeout) had passed)")
                continue
            }
            var reauthenticated = false
            while true {
                if Task.isCancelled { return }
                do {
                    let why = try await watchOnce(body, prefixRange: check, at: endpoint, until: operationDeadline, continuation)
                    guard let why else { return }  // cancelled
                    report.append("\(endpoint): \(why)")
                    setAside(endpoint)
                } catch WatchEnd.tokenRefused where !reauthenticated && configuration.user != nil {
                    reauthenticated = true
                    dropToken()
                    continue
                } catch WatchEnd.tokenRefused {
                    throw .refused("etcd refused the token, also after authenticating again as \(configuration.user ?? "nobody")")
                } catch let error as EtcdError {
                    throw error
                } catch {
                    throw .refused("\(error)")
                }
                break
            }
        }
        throw .unavailable(report.joined(separator: "; "))
    }

    /// One watch request at one member. Returns why the member did not take the watch (the
    /// next is then tried), nil when the task was cancelled; throws `.compacted`, `.refused`,
    /// `.unavailable` (once the watch was created, for the stream ending) or `tokenRefused`.
    ///
    /// While the stream is open, the member is asked every `watchCheckInterval` for a
    /// linearizable count of the prefix: a member that stops answering (a host gone dark, a
    /// member cut off from its quorum) ends the watch with `.unavailable` too, where the stream
    /// alone would only fall silent.
    private func watchOnce(_ body: [UInt8], prefixRange: [UInt8], at endpoint: Endpoint, until operationDeadline: ContinuousClock.Instant,
                           _ continuation: AsyncThrowingStream<EtcdWatchBatch, any Error>.Continuation) async throws -> String? {
        let deadline = min(ContinuousClock.now + configuration.requestTimeout, operationDeadline)
        var request = HTTPClientRequest(url: endpoint.url + "/v3/watch")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        if configuration.user != nil {
            switch await token(at: endpoint, until: deadline) {
            case .success(let token): request.headers.add(name: "Authorization", value: token)
            case .failure(.refused(let status, let error)): throw EtcdError.refused(Self.describe(error, status: status))
            case .failure(.failed(let why, _)): return why
            case .failure(.answered): return "authentication gave no token"
            }
        }
        request.body = .bytes(ByteBuffer(bytes: body))
        let created = NIOLockedValueBox(false)
        do {
            let nioDeadline = NIODeadline.now() + .nanoseconds(Self.nanoseconds(max(deadline - ContinuousClock.now, .zero)))
            let response = try await http.execute(request, deadline: nioDeadline)
            guard response.status == .ok else {
                let data = Array(try await response.body.collect(upTo: 1 << 20).readableBytesView)
                let error = (try? JSONDecoder().decode(WireError.self, from: Data(data))) ?? WireError()
                let status = Int(response.status.code)
                if status == 401 { throw WatchEnd.tokenRefused }
                if status >= 500 { return Self.describe(error, status: status) }
                throw EtcdError.refused(Self.describe(error, status: status))
            }
            return try await withThrowingTaskGroup(of: String?.self) { group in
                group.addTask {
                    try await self.read(response.body, from: endpoint, created: created, continuation)
                }
                if configuration.watchCheckInterval > .zero {
                    group.addTask {
                        try await self.check(endpoint, prefixRange: prefixRange, created: created)
                    }
                }
                defer { group.cancelAll() }
                return try await group.next() ?? nil
            }
        } catch let error as EtcdError {
            throw error
        } catch let error as WatchEnd {
            throw error
        } catch let error as JSONObjectSplitter.Garbage {
            throw EtcdError.malformedReply(error.description)
        } catch {
            if Task.isCancelled { return nil }
            let why: String
            switch Self.failure(error) {
            case .failed(let text, _): why = text
            default: why = "\(error)"
            }
            if created.withLockedValue({ $0 }) { throw EtcdError.unavailable("\(endpoint): the watch failed: \(why)") }
            return why
        }
    }

    /// Reads the watch's stream as it comes, yielding a batch per response with events.
    private func read(_ body: HTTPClientResponse.Body, from endpoint: Endpoint, created: NIOLockedValueBox<Bool>,
                      _ continuation: AsyncThrowingStream<EtcdWatchBatch, any Error>.Continuation) async throws -> String? {
        var splitter = JSONObjectSplitter()
        for try await chunk in body {
            for object in try splitter.feed(chunk.readableBytesView) {
                let message = try Wire.decode(WireStreamMessage<WireWatchResponse>.self, object)
                let isCreated = created.withLockedValue { $0 }
                if let error = message.error {
                    if error.grpc_code == 16 { throw WatchEnd.tokenRefused }
                    let text = error.message ?? "the watch failed (gRPC code \(error.grpc_code ?? 0))"
                    if isCreated { throw EtcdError.unavailable("\(endpoint): \(text)") }
                    if error.grpc_code == 14 || error.grpc_code == 4 { return text }
                    throw EtcdError.refused(text)
                }
                guard let reply = message.result else { continue }
                if reply.canceled == true {
                    if let compacted = reply.compact_revision?.value, compacted > 0 {
                        throw EtcdError.compacted(compactRevision: compacted)
                    }
                    let reason = reply.cancel_reason ?? "the watch was cancelled by etcd"
                    if reason.contains("Unauthenticated") || reason.contains("invalid auth token") { throw WatchEnd.tokenRefused }
                    throw EtcdError.refused(Self.describe(WireError(message: reason), status: 400))
                }
                if reply.created == true {
                    created.withLockedValue { $0 = true }
                    markAnswered(endpoint)
                    // The acknowledgement carries no events.
                    if reply.events?.isEmpty ?? true { continue }
                }
                guard created.withLockedValue({ $0 }) else { continue }
                var events: [EtcdWatchEvent] = []
                for event in reply.events ?? [] {
                    guard let kv = event.kv else { continue }
                    if event.type == "DELETE" {
                        events.append(.delete(key: try Wire.text(kv.key ?? ""), revision: kv.mod_revision?.value ?? 0))
                    } else {
                        events.append(.put(try kv.keyValue()))
                    }
                }
                // A progress notice carries no events but says how far the store is.
                continuation.yield(EtcdWatchBatch(events: events, revision: try Self.revision(reply.header)))
            }
        }
        if Task.isCancelled { return nil }
        if created.withLockedValue({ $0 }) { throw EtcdError.unavailable("\(endpoint): the watch stream ended") }
        return "the watch stream ended before the watch was created"
    }

    /// Asks `endpoint` every `watchCheckInterval` for a linearizable count of the watched
    /// range; throws `.unavailable` (or returns why, before the watch was created) when it does
    /// not answer or answers that it cannot serve.
    private func check(_ endpoint: Endpoint, prefixRange: [UInt8], created: NIOLockedValueBox<Bool>) async throws -> String? {
        while true {
            try await Task.sleep(for: configuration.watchCheckInterval)
            let attempt = await post("/v3/kv/range", prefixRange, to: endpoint,
                                     until: ContinuousClock.now + configuration.requestTimeout, collecting: true)
            let why: String
            switch attempt {
            case .answered: continue
            case .refused(let status, let error) where status >= 500: why = Self.describe(error, status: status)
            case .refused(401, _):
                dropToken()  // the next check, or request, authenticates again
                continue
            case .refused: continue  // not about the member's health
            case .failed(let text, _): why = text
            }
            if Task.isCancelled { return nil }
            setAside(endpoint)
            if created.withLockedValue({ $0 }) { throw EtcdError.unavailable("\(endpoint): the member stopped answering: \(why)") }
            return why
        }
    }
}

extension WireError {
    init(message: String? = nil) {
        self.init(error: nil, message: message, code: nil)
    }
}
