import FerryEtcd
import Foundation

/// An in-memory `KeyValueStore` with etcd's semantics where membership depends on them:
/// revisions (one per write), leases on a test clock (`advance(seconds:)` lapses those not
/// renewed, deleting their keys), watches replaying from a revision, compaction, and an outage
/// (`isDown`: every call fails `.unavailable`, running watches end so).
final class MemoryStore: KeyValueStore, @unchecked Sendable {
    private let lock = NSLock()
    private var keys: [String: EtcdKeyValue] = [:]
    private var revision: Int64 = 1
    private var history: [(revision: Int64, event: EtcdWatchEvent)] = []
    private var compactedAt: Int64 = 0
    private var leases: [Int64: (ttl: Int, deadline: Double)] = [:]
    private var nextLease: Int64 = 0x1000
    private var now: Double = 0
    private var down = false
    /// While true, watches deliver nothing (a watcher fallen behind).
    private var holding = false
    private var watchers: [UUID: Watcher] = [:]
    /// Calls to `create`, for the race test to interleave with.
    var beforeCreate: (@Sendable (String) -> Void)?

    private struct Watcher {
        var prefix: String
        var next: Int64
        var continuation: AsyncThrowingStream<EtcdWatchBatch, any Error>.Continuation
    }

    var isDown: Bool {
        get { lock.withLock { down } }
        set {
            let ended: [Watcher] = lock.withLock {
                down = newValue
                guard newValue else { return [] }
                defer { watchers.removeAll() }
                return Array(watchers.values)
            }
            for w in ended { w.continuation.finish(throwing: EtcdError.unavailable("memory store is down")) }
        }
    }

    var currentRevision: Int64 { lock.withLock { revision } }
    /// Renewals answered so far (every lease).
    var renewals: Int { lock.withLock { renewed } }
    private var renewed = 0
    var leaseCount: Int { lock.withLock { leases.count } }
    func value(_ key: String) -> [UInt8]? { lock.withLock { keys[key]?.value } }
    func keys(under prefix: String) -> [String] { lock.withLock { keys.keys.filter { $0.hasPrefix(prefix) }.sorted() } }

    private func check() throws(EtcdError) {
        if lock.withLock({ down }) { throw .unavailable("memory store is down") }
    }

    func range(prefix: String) async throws(EtcdError) -> EtcdSnapshot {
        try check()
        return lock.withLock {
            EtcdSnapshot(keyValues: keys.values.filter { $0.key.hasPrefix(prefix) }.sorted { $0.key < $1.key }, revision: revision)
        }
    }

    func get(_ key: String) async throws(EtcdError) -> (keyValue: EtcdKeyValue?, revision: Int64) {
        try check()
        return lock.withLock { (keys[key], revision) }
    }

    func put(_ key: String, value: [UInt8], lease: Int64) async throws(EtcdError) -> Int64 {
        try check()
        let r: Int64? = lock.withLock {
            guard lease == 0 || leases[lease] != nil else { return nil }
            return write(key, value, lease)
        }
        guard let r else { throw .leaseNotFound(lease) }
        deliver()
        return r
    }

    func create(_ key: String, value: [UInt8], lease: Int64) async throws(EtcdError) -> Bool {
        try check()
        beforeCreate?(key)
        let outcome: Bool? = lock.withLock {
            guard lease == 0 || leases[lease] != nil else { return nil }
            guard keys[key] == nil else { return false }
            write(key, value, lease)
            return true
        }
        guard let outcome else { throw .leaseNotFound(lease) }
        deliver()
        return outcome
    }

    func delete(_ key: String) async throws(EtcdError) -> Bool {
        try check()
        let was = lock.withLock { remove([key]) > 0 }
        deliver()
        return was
    }

    func grantLease(ttl: Int) async throws(EtcdError) -> EtcdLease {
        try check()
        return lock.withLock {
            nextLease += 1
            leases[nextLease] = (ttl, now + Double(ttl))
            return EtcdLease(id: nextLease, ttl: ttl)
        }
    }

    func keepAlive(_ lease: Int64) async throws(EtcdError) -> Int {
        try check()
        let ttl: Int? = lock.withLock {
            guard let l = leases[lease] else { return nil }
            leases[lease] = (l.ttl, now + Double(l.ttl))
            renewed += 1
            return l.ttl
        }
        guard let ttl else { throw .leaseNotFound(lease) }
        return ttl
    }

    func revokeLease(_ lease: Int64) async throws(EtcdError) {
        try check()
        lock.withLock { expire([lease]) }
        deliver()
    }

    func watch(prefix: String, from revision: Int64) -> AsyncThrowingStream<EtcdWatchBatch, any Error> {
        let (stream, continuation) = AsyncThrowingStream<EtcdWatchBatch, any Error>.makeStream()
        let id = UUID()
        let refusal: EtcdError? = lock.withLock {
            if down { return .unavailable("memory store is down") }
            if revision < compactedAt { return .compacted(compactRevision: compactedAt) }
            watchers[id] = Watcher(prefix: prefix, next: revision, continuation: continuation)
            return nil
        }
        if let refusal {
            continuation.finish(throwing: refusal)
            return stream
        }
        continuation.onTermination = { [weak self] _ in self?.lock.withLock { _ = self?.watchers.removeValue(forKey: id) } }
        deliver()
        return stream
    }

    // MARK: What tests do to the store

    /// Moves the test clock on: leases not renewed within their TTL lapse, their keys deleted.
    func advance(seconds: Double) {
        lock.withLock {
            now += seconds
            expire(leases.filter { $0.value.deadline <= now }.map(\.key))
        }
        deliver()
    }

    /// Lapses `lease` now (as if not renewed for its TTL).
    func lapse(_ lease: Int64) {
        lock.withLock { expire([lease]) }
        deliver()
    }

    /// Forgets history before the current revision; watchers that still need it end
    /// `.compacted` (a watch fallen behind).
    func compact() {
        let behind: [Watcher] = lock.withLock {
            compactedAt = revision
            history.removeAll { $0.revision < compactedAt }
            let ids = watchers.filter { $0.value.next < compactedAt }.map(\.key)
            defer { for id in ids { watchers.removeValue(forKey: id) } }
            return ids.compactMap { watchers[$0] }
        }
        for w in behind { w.continuation.finish(throwing: EtcdError.compacted(compactRevision: compactedAt)) }
    }

    /// Holds the watches' deliveries (true), or lets them catch up (false).
    func hold(_ on: Bool) {
        lock.withLock { holding = on }
        if !on { deliver() }
    }

    /// Writes `key` at once, with no lease (another host's write, in a race).
    func forcePut(_ key: String, value: [UInt8]) {
        lock.withLock { _ = write(key, value, 0) }
        deliver()
    }

    // MARK: Inside (under `lock` unless said)

    @discardableResult
    private func write(_ key: String, _ value: [UInt8], _ lease: Int64) -> Int64 {
        revision += 1
        let old = keys[key]
        let kv = EtcdKeyValue(key: key, value: value, createRevision: old?.createRevision ?? revision, modRevision: revision,
                              version: (old?.version ?? 0) + 1, lease: lease)
        keys[key] = kv
        history.append((revision, .put(kv)))
        return revision
    }

    /// Deletes `names` in one revision (as a lease expiry does); how many were there.
    @discardableResult
    private func remove(_ names: [String]) -> Int {
        let present = names.filter { keys[$0] != nil }
        guard !present.isEmpty else { return 0 }
        revision += 1
        for key in present.sorted() {
            keys.removeValue(forKey: key)
            history.append((revision, .delete(key: key, revision: revision)))
        }
        return present.count
    }

    private func expire(_ ids: [Int64]) {
        for id in ids {
            guard leases.removeValue(forKey: id) != nil else { continue }
            _ = remove(keys.values.filter { $0.lease == id }.map(\.key))
        }
    }

    /// Sends each watcher the events it has not had (yielded under `lock`, so that batches
    /// reach each watcher in order; a yield never calls back).
    private func deliver() {
        lock.withLock {
            guard !holding, !down else { return }
            for (id, w) in watchers {
                let events = history.filter { $0.revision >= w.next }.filter { e in
                    switch e.event {
                    case .put(let kv): kv.key.hasPrefix(w.prefix)
                    case .delete(let key, _): key.hasPrefix(w.prefix)
                    }
                }
                watchers[id]?.next = revision + 1
                if !events.isEmpty { w.continuation.yield(EtcdWatchBatch(events: events.map(\.event), revision: revision)) }
            }
        }
    }
}

