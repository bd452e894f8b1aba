/// What Ferry's membership asks of etcd: the few v3 operations flannel's layout needs, as a
/// protocol so that the membership logic is written (and unit-tested) against it, and
/// `EtcdClient` (the v3 JSON gateway over HTTP) is the one implementation that talks to a real
/// etcd. Keys are UTF-8 strings; values are bytes (etcd's own types). Revisions and lease IDs
/// are etcd's 64-bit integers.
///
/// Every operation throws `EtcdError` and nothing else; an implementation retries across its
/// endpoints itself, and throws `.unavailable` only when none answered.
public protocol KeyValueStore: Sendable {
    /// Every key under `prefix` (keys that start with it), and the store's revision at the
    /// time of the reading: the snapshot a watch then starts after.
    func range(prefix: String) async throws(EtcdError) -> EtcdSnapshot

    /// One key, with the store's revision; nil when absent.
    func get(_ key: String) async throws(EtcdError) -> (keyValue: EtcdKeyValue?, revision: Int64)

    /// Sets `key` to `value`, attached to `lease` (0: none); the revision of the write.
    @discardableResult
    func put(_ key: String, value: [UInt8], lease: Int64) async throws(EtcdError) -> Int64

    /// Creates `key` only if it does not exist (a transaction on `version(key) == 0`): true if
    /// this call created it, false if the key was there (nothing written then).
    func create(_ key: String, value: [UInt8], lease: Int64) async throws(EtcdError) -> Bool

    /// Deletes `key`; whether it was there.
    @discardableResult
    func delete(_ key: String) async throws(EtcdError) -> Bool

    /// A new lease of `ttl` seconds: its ID and the TTL etcd granted.
    func grantLease(ttl: Int) async throws(EtcdError) -> EtcdLease

    /// Renews `lease` once: the TTL left after renewal. Throws `.leaseNotFound` when the lease
    /// has lapsed (its keys are then gone).
    func keepAlive(_ lease: Int64) async throws(EtcdError) -> Int

    /// Revokes `lease` (its keys go at once); revoking a lapsed lease is not an error.
    func revokeLease(_ lease: Int64) async throws(EtcdError)

    /// Every change under `prefix` from `revision` on, in order, a batch per etcd watch
    /// response, until the task is cancelled. The sequence ends by throwing: `.compacted` when
    /// `revision` is older than the store keeps (re-list, then watch again), `.unavailable`
    /// when the store went away (retry with back-off).
    func watch(prefix: String, from revision: Int64) -> AsyncThrowingStream<EtcdWatchBatch, any Error>
}

/// One key as etcd keeps it.
public struct EtcdKeyValue: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    /// The revision that created the key, and that last changed it.
    public var createRevision: Int64
    public var modRevision: Int64
    /// Writes since creation (1 for a new key).
    public var version: Int64
    /// The lease the key is attached to; 0 for none.
    public var lease: Int64

    public init(key: String, value: [UInt8], createRevision: Int64, modRevision: Int64, version: Int64, lease: Int64) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }
}

/// Every key under a prefix at one revision.
public struct EtcdSnapshot: Sendable, Equatable {
    public var keyValues: [EtcdKeyValue]
    public var revision: Int64

    public init(keyValues: [EtcdKeyValue], revision: Int64) {
        self.keyValues = keyValues
        self.revision = revision
    }
}

/// A lease granted.
public struct EtcdLease: Sendable, Equatable {
    public var id: Int64
    /// Seconds etcd granted (it may differ from what was asked).
    public var ttl: Int

    public init(id: Int64, ttl: Int) {
        self.id = id
        self.ttl = ttl
    }
}

/// One change a watch reports.
public enum EtcdWatchEvent: Sendable, Equatable {
    /// Created or changed (a put).
    case put(EtcdKeyValue)
    /// Deleted, by a delete or by its lease's expiry, at `revision`.
    case delete(key: String, revision: Int64)
}

/// The events of one watch response, and the store's revision when it was sent.
public struct EtcdWatchBatch: Sendable, Equatable {
    public var events: [EtcdWatchEvent]
    public var revision: Int64

    public init(events: [EtcdWatchEvent], revision: Int64) {
        self.events = events
        self.revision = revision
    }
}

/// Why an etcd operation failed.
public enum EtcdError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No endpoint answered: each endpoint and what happened there.
    case unavailable(String)
    /// A watch asked for a revision older than the store keeps: re-list.
    case compacted(compactRevision: Int64)
    /// The lease is gone (lapsed or revoked).
    case leaseNotFound(Int64)
    /// etcd answered with an error (authentication, permission, a bad request): its message.
    case refused(String)
    /// etcd's answer could not be read.
    case malformedReply(String)

    public var description: String {
        switch self {
        case .unavailable(let why): "etcd is unreachable: \(why)"
        case .compacted(let revision): "the watch's revision was compacted (etcd keeps revisions from \(revision) on)"
        case .leaseNotFound(let id): "etcd lease \(String(id, radix: 16)) is gone (lapsed or revoked)"
        case .refused(let message): "etcd refused the request: \(message)"
        case .malformedReply(let why): "etcd's reply could not be read: \(why)"
        }
    }
}
