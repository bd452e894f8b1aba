import FerryEtcd
import FerrySettings
import FerryWire
import Foundation
import Logging

/// One host's membership in a network kept in etcd (`MembershipLayout`): it registers the host
/// (a lease, the host key, a subnet from the range when it needs one), keeps the lease alive,
/// and makes the engine's peers follow the hosts in the store: a snapshot first, then a watch
/// from the next revision, a re-list and diff whenever the watch cannot go on (compacted, or
/// the store away and back).
///
/// etcd is not in the data path: when the store is unreachable the peers stay as they were
/// (forwarding goes on with the last membership), the agent retries with back-off and says so
/// once per change of state (the log, `status`); a lease that lapsed meanwhile is replaced and
/// the host registered again, asking for the subnet it held first.
///
/// Use: `register()`, `snapshot()` (the peers to start with), then `run(target:)` in a task
/// until it is cancelled, and `leave()` on a clean stop. `@unchecked Sendable`: the state
/// shared by the keep-alive and watch loops and the control socket is under `lock`.
public final class MembershipAgent: @unchecked Sendable {
    /// How often the agent renews and how it backs off; the default renews at a third of the TTL.
    public struct Timing: Sendable {
        public var renew: Duration
        public var backoffMinimum: Duration
        public var backoffMaximum: Duration
        public init(renew: Duration, backoffMinimum: Duration = .milliseconds(500), backoffMaximum: Duration = .seconds(4)) {
            self.renew = renew
            self.backoffMinimum = backoffMinimum
            self.backoffMaximum = backoffMaximum
        }
        public static func forTTL(_ ttl: Int) -> Timing { Timing(renew: .milliseconds(max(1, ttl) * 1000 / 3)) }
    }

    public let store: any KeyValueStore
    public let layout: MembershipLayout
    /// This host's underlay address.
    public let address: IPAddress
    /// A subnet given by hand (`--subnet`): registered as is, never taken from the range.
    public let configuredSubnet: IPPrefix?
    /// The range to take a subnet from (nil: none, or the host has a configured subnet).
    public let allocator: SubnetAllocator?
    public let ttl: Int
    public let version: String
    let timing: Timing
    let logger: Logger
    let lock = NSLock()
    var state = State()

    struct State {
        var lease: Int64 = 0
        var subnet: IPPrefix?
        /// The subnet asked for first: the one held before (subnet.env, or before a lapse).
        var preferred: IPPrefix?
        var since = ""
        var revision: Int64 = 0
        /// Every host in the store, this one too.
        var hosts: [IPAddress: HostRecord] = [:]
        /// The peers the target has from membership.
        var applied: [IPAddress: PeerSpec] = [:]
        var reachable = true
        var unreachableSince: Date?
        /// Counts the store's returns (reachable again after a failure); `waiters`: the loops
        /// backing off, woken at the next return (`backOff`).
        var returns: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
        var lastError: String?
        var needsRegistration = false
        var registrations = 0
        var relists = 0
        var outages = 0
        var watchFailures = 0
    }

    public init(store: any KeyValueStore, layout: MembershipLayout, address: IPAddress, configuredSubnet: IPPrefix? = nil,
                allocator: SubnetAllocator? = nil, preferredSubnet: IPPrefix? = nil, ttl: Int, version: String,
                timing: Timing? = nil, logger: Logger) {
        self.store = store
        self.layout = layout
        self.address = address
        self.configuredSubnet = configuredSubnet
        self.allocator = configuredSubnet == nil ? allocator : nil
        self.ttl = ttl
        self.version = version
        self.timing = timing ?? .forTTL(ttl)
        self.logger = logger
        state.preferred = preferredSubnet
    }

    /// The subnet this host holds now (configured, or taken from the range).
    public var subnet: IPPrefix? { lock.withLock { state.subnet } }
    /// The lease the host's keys are under.
    public var lease: Int64 { lock.withLock { state.lease } }
    /// The peers the target has from membership now.
    public var appliedPeers: [PeerSpec] { lock.withLock { state.applied.values.sorted { $0.address < $1.address } } }
    /// Whether etcd answered the last time it was asked.
    public var isReachable: Bool { lock.withLock { state.reachable } }

    // MARK: Handing a registration over

    /// What a registration and a snapshot left: enough for another agent, in another process,
    /// to go on from there (`ferry run --user` joins in a child process, before it gives its
    /// privileges up, and follows etcd in the parent afterwards).
    public struct Joined: Codable, Sendable, Equatable {
        public var lease: Int64
        public var subnet: String?
        public var since: String
        public var revision: Int64
        /// Every host in the snapshot, this one too, by the address its key names.
        public var hosts: [String: HostRecord]
    }

    /// This agent's registration and last listing, for `adopt`.
    public var joined: Joined {
        lock.withLock {
            Joined(lease: state.lease, subnet: state.subnet?.description, since: state.since, revision: state.revision,
                   hosts: Dictionary(uniqueKeysWithValues: state.hosts.map { ($0.key.description, $0.value) }))
        }
    }

    /// Goes on from another agent's registration and snapshot (`joined`, of this host with the
    /// same layout): the same lease, kept alive from here, and a watch from the revision after
    /// its snapshot, so nothing that happened in between is missed. Returns the peers to start
    /// with, as `snapshot()` does.
    public func adopt(_ joined: Joined) throws -> [PeerSpec] {
        var hosts: [IPAddress: HostRecord] = [:]
        for (address, record) in joined.hosts {
            guard let host = IPAddress(address) else { throw MembershipError("a host handed over has no address: \(address)") }
            hosts[host] = record
        }
        let subnet = try joined.subnet.map { text in
            guard let prefix = try? IPPrefix(parsing: text) else { throw MembershipError("the subnet handed over is no prefix: \(text)") }
            return prefix
        }
        lock.withLock {
            state.lease = joined.lease
            state.subnet = subnet
            state.preferred = subnet
            state.since = joined.since
            state.revision = joined.revision
            state.hosts = hosts
            state.needsRegistration = false
            state.registrations += 1
        }
        return Self.peers(of: hosts, except: address).values.sorted { $0.address < $1.address }
    }

    // MARK: Registration

    /// Grants a lease, takes a subnet when the host needs one (its own subnet key first, then
    /// the one it held before, then a free one, by create-if-absent, retried on a race), and
    /// puts the host key under the lease. Returns the subnet held.
    @discardableResult
    public func register() async throws -> IPPrefix? {
        let lease = try await store.grantLease(ttl: ttl)
        var subnet = configuredSubnet
        let since = ISO8601DateFormatter().string(from: Date())
        let record: HostRecord
        do {
            if let allocator { subnet = try await takeSubnet(allocator, lease: lease.id) }
            record = HostRecord(address: address.description, subnet: subnet?.description, version: version, since: since)
            try await store.put(layout.hostKey(address), value: record.encoded(), lease: lease.id)
        } catch {
            // Not left to lapse: a subnet taken under it would stay held for its TTL.
            try? await store.revokeLease(lease.id)
            throw error
        }
        let previous = lock.withLock {
            let old = state.lease
            state.lease = lease.id
            state.subnet = subnet
            state.preferred = subnet
            state.since = since
            state.needsRegistration = false
            state.registrations += 1
            state.hosts[address] = record
            return old
        }
        logger.notice("etcd: registered \(layout.hostKey(address))\(subnet.map { " with subnet \($0)" } ?? "") under lease \(String(lease.id, radix: 16)) (TTL \(lease.ttl) s)\(previous != 0 ? " (again: the lease before lapsed)" : "")")
        return subnet
    }

    /// The subnet key naming this host if there is one, else the preferred subnet if free,
    /// else a free one: each taken by create-if-absent, the whole retried when another host
    /// took it first.
    func takeSubnet(_ allocator: SubnetAllocator, lease: Int64) async throws -> IPPrefix {
        for _ in 0..<16 {
            let listing = try await store.range(prefix: layout.subnetsPrefix)
            var taken = Set<IPPrefix>()
            for kv in listing.keyValues {
                guard let subnet = layout.subnet(ofKey: kv.key) else { continue }
                let holder = try? SubnetRecord.decode(kv.value, key: kv.key)
                if holder?.address == address.description, allocator.holds(subnet) {
                    // Ours from before (a restart within the TTL): put it under the new lease.
                    try await store.put(kv.key, value: SubnetRecord(address: address.description).encoded(), lease: lease)
                    return subnet
                }
                taken.insert(subnet)
            }
            let preferred = lock.withLock { state.preferred }
            let candidate: IPPrefix
            if let preferred, allocator.holds(preferred), !taken.contains(preferred) {
                candidate = preferred
            } else {
                guard let free = allocator.free(for: address, taken: taken) else {
                    throw MembershipError("every /\(allocator.subnetLength) of \(allocator.network) is taken (\(taken.count) hosts): "
                                          + "widen the range or lengthen the subnets (ferry etcd init --force)")
                }
                candidate = free
            }
            if try await store.create(layout.subnetKey(candidate), value: SubnetRecord(address: address.description).encoded(),
                                      lease: lease) {
                return candidate
            }
            logger.info("etcd: subnet \(candidate) was taken by another host meanwhile; trying another")
        }
        throw MembershipError("could not take a subnet from \(allocator.network): other hosts took each one tried first (16 tries)")
    }

    /// The hosts in the store now: the peers to start with (every host but this one), and the
    /// revision the watch goes on from.
    public func snapshot() async throws -> [PeerSpec] {
        let listing = try await store.range(prefix: layout.hostsPrefix)
        let hosts = parse(listing.keyValues)
        lock.withLock {
            state.hosts = hosts
            state.revision = listing.revision
        }
        return Self.peers(of: hosts, except: address).values.sorted { $0.address < $1.address }
    }

    /// Revokes the lease: this host's keys go at once, and its peers drop it now rather than
    /// after the TTL. Errors are logged (the lease lapses by itself anyway).
    public func leave() async {
        let lease = lock.withLock { state.lease }
        guard lease != 0 else { return }
        do {
            try await store.revokeLease(lease)
            logger.info("etcd: left (lease \(String(lease, radix: 16)) revoked)")
        } catch {
            logger.notice("etcd: could not revoke the lease on leaving (\(error)); the host key goes when it lapses")
        }
    }

    // MARK: Following the store

    /// Keeps the lease alive and makes `target`'s peers follow the store until the task is
    /// cancelled. `applied`: the peers the target has from membership already (those of
    /// `snapshot()` the engine started with).
    public func run(target: MembershipTarget, applied: [PeerSpec]) async {
        lock.withLock { state.applied = Dictionary(applied.map { ($0.address, $0) }, uniquingKeysWith: { $1 }) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.keepAlive() }
            group.addTask { await self.follow(target) }
            await group.waitForAll()
        }
    }

    /// Renews the lease at `timing.renew`; registers again when it lapsed (or the host key went).
    func keepAlive() async {
        var backoff = timing.backoffMinimum
        while !Task.isCancelled {
            let (lease, again) = lock.withLock { (state.lease, state.needsRegistration) }
            do {
                if again || lease == 0 {
                    try await register()
                } else {
                    _ = try await store.keepAlive(lease)
                }
                reached()
                backoff = timing.backoffMinimum
                try? await Task.sleep(for: timing.renew)
            } catch EtcdError.leaseNotFound {
                logger.warning("etcd: lease \(String(lease, radix: 16)) lapsed; registering again (same subnet asked for)")
                lock.withLock { state.needsRegistration = true }
            } catch let error as EtcdError {
                await backOff(backoff, unlessReturnedSince: failed(error))
                backoff = min(backoff * 2, timing.backoffMaximum)
            } catch {
                // A membership error (no subnet free): said, and tried again later.
                logger.error("etcd: cannot register: \(error)")
                lock.withLock { state.lastError = "\(error)" }
                try? await Task.sleep(for: timing.backoffMaximum)
            }
        }
    }

    /// Watches the hosts from the revision after the last reading; re-lists and diffs when the
    /// watch ends (compacted, or the store away), with back-off while the store does not answer.
    func follow(_ target: MembershipTarget) async {
        var backoff = timing.backoffMinimum
        var listed = true  // `snapshot()` was the first listing
        while !Task.isCancelled {
            if !listed {
                do {
                    try await relist(target)
                    listed = true
                    backoff = timing.backoffMinimum
                } catch {
                    let returns = (error as? EtcdError).flatMap(failed)
                    lock.withLock { state.watchFailures += 1 }
                    await backOff(backoff, unlessReturnedSince: returns)
                    backoff = min(backoff * 2, timing.backoffMaximum)
                    continue
                }
            }
            let from = lock.withLock { state.revision } + 1
            logger.debug("etcd: watching \(layout.hostsPrefix) from revision \(from)")
            do {
                for try await batch in store.watch(prefix: layout.hostsPrefix, from: from) {
                    reached()
                    apply(batch, target)
                }
                if Task.isCancelled { return }
                // Ended without a reason: listed again, as after an outage.
                listed = false
            } catch EtcdError.compacted(let kept) {
                logger.notice("etcd: the watch fell behind a compaction (revisions kept from \(kept), wanted \(from)); listing again")
                listed = false
            } catch {
                // The store away: listed again once it answers, then watched from there. Not
                // resumed from the last revision seen: a watch from exactly the revision etcd
                // compacted to is accepted but misses the deletions at that revision (their
                // tombstones went with the compaction), which a live test met.
                let returns = (error as? EtcdError).flatMap(failed)
                if !(error is EtcdError) { logger.warning("etcd: watch ended: \(error)") }
                logger.debug("etcd: the watch from revision \(from) ended: \(error)")
                lock.withLock { state.watchFailures += 1 }
                listed = false
                await backOff(backoff, unlessReturnedSince: returns)
                backoff = min(backoff * 2, timing.backoffMaximum)
            }
        }
    }

    /// Reads every host again and makes the target's peers match.
    func relist(_ target: MembershipTarget) async throws {
        let listing = try await store.range(prefix: layout.hostsPrefix)
        reached()
        let hosts = parse(listing.keyValues)
        let (applied, mineGone) = lock.withLock {
            state.hosts = hosts
            state.revision = listing.revision
            state.relists += 1
            return (state.applied, hosts[address] == nil && state.lease != 0)
        }
        if mineGone { lock.withLock { state.needsRegistration = true } }
        let wanted = Self.peers(of: hosts, except: address)
        let (remove, add) = MembershipDiff.changes(applied: applied, wanted: wanted)
        if !remove.isEmpty || !add.isEmpty {
            logger.info("etcd: listed \(hosts.count) hosts at revision \(listing.revision): \(remove.count) peers to remove, \(add.count) to add")
        }
        for a in remove { removePeer(a, target) }
        for p in add { addPeer(p, target) }
    }

    /// One watch response: hosts put (joined, or changed) and deleted (left, or lapsed).
    func apply(_ batch: EtcdWatchBatch, _ target: MembershipTarget) {
        for event in batch.events {
            switch event {
            case .put(let kv):
                lock.withLock { state.revision = max(state.revision, kv.modRevision) }
                guard let host = layout.address(ofHostKey: kv.key) else { continue }
                let record: HostRecord
                do { record = try HostRecord.decode(kv.value, key: kv.key) } catch {
                    logger.warning("etcd: \(error); that host is left out")
                    continue
                }
                lock.withLock { state.hosts[host] = record }
                guard host != address else { continue }
                guard let spec = Self.peer(record, at: host) else { continue }
                let now = lock.withLock { state.applied[host] }
                if now == spec { continue }
                if now != nil { removePeer(host, target) }
                addPeer(spec, target)
            case .delete(let key, let revision):
                lock.withLock { state.revision = max(state.revision, revision) }
                guard let host = layout.address(ofHostKey: key) else { continue }
                lock.withLock { _ = state.hosts.removeValue(forKey: host) }
                if host == address {
                    logger.warning("etcd: this host's key \(key) is gone (its lease lapsed?); registering again")
                    lock.withLock { state.needsRegistration = true }
                    continue
                }
                if lock.withLock({ state.applied[host] != nil }) { removePeer(host, target) }
            }
        }
        lock.withLock { state.revision = max(state.revision, batch.revision) }
    }

    func addPeer(_ peer: PeerSpec, _ target: MembershipTarget) {
        do {
            try target.addPeer(peer)
            lock.withLock { state.applied[peer.address] = peer }
            logger.notice("etcd: host \(peer) joined: peer added")
        } catch {
            logger.warning("etcd: host \(peer) joined, but could not be added as a peer: \(error) (tried again at the next listing)")
        }
    }

    func removePeer(_ address: IPAddress, _ target: MembershipTarget) {
        let was = lock.withLock { state.applied.removeValue(forKey: address) }
        do {
            try target.removePeer(address)
            logger.notice("etcd: host \(was.map(\.description) ?? address.description) left: peer removed")
        } catch {
            logger.warning("etcd: host \(address) left, but could not be removed as a peer: \(error)")
        }
    }

    /// The store answered: said once, when it was away before, and the other loop woken from
    /// its back-off.
    func reached() {
        let (back, woken): (Date?, [CheckedContinuation<Void, Never>]) = lock.withLock {
            guard !state.reachable else { return (nil, []) }
            state.reachable = true
            state.returns += 1
            defer {
                state.unreachableSince = nil
                state.waiters.removeAll()
            }
            return (state.unreachableSince, Array(state.waiters.values))
        }
        for continuation in woken { continuation.resume() }
        if let back {
            logger.notice("etcd: reachable again after \(String(format: "%.1f", Date().timeIntervalSince(back))) s; listing the hosts again")
        }
    }

    /// How many times the store came back (`reached()` after a failure).
    var returns: UInt64 { lock.withLock { state.returns } }

    /// Waits about `duration` (±20 %, so that hosts that lost etcd together do not come back
    /// to it in step) before a loop tries the store again, or less: once the store came back
    /// since `returns` (from `failed`), when the other loop reached it. A lapsed lease is then
    /// taken again as soon as the watch gets through, not a back-off step (up to
    /// `backoffMaximum`) later. Never less than `backoffMinimum` (or the whole wait, when
    /// shorter), however often the other loop gets through. Without `returns` (etcd answered,
    /// but with an error), the whole wait.
    func backOff(_ duration: Duration, unlessReturnedSince returns: UInt64?) async {
        let jittered = duration * Double.random(in: 0.8...1.2)
        guard let returns else {
            try? await Task.sleep(for: jittered)
            return
        }
        let floor = min(jittered, timing.backoffMinimum)
        try? await Task.sleep(for: floor)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: jittered - floor) }
            group.addTask { await self.untilReturned(since: returns) }
            await group.next()
            group.cancelAll()
        }
    }

    /// Returns once the store came back since `returns`, or when the task is cancelled.
    func untilReturned(since returns: UInt64) async {
        let id = lock.withLock {
            state.nextWaiter += 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = lock.withLock {
                    guard state.returns == returns, !Task.isCancelled else { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            lock.withLock { state.waiters.removeValue(forKey: id) }?.resume()
        }
    }

    /// The store did not answer: said once per outage; forwarding goes on as it was. Returns,
    /// when the store is away (`.unavailable`), the count of its returns for `backOff` to wake
    /// at the next; nil for an answer that was an error (a refusal, a reply not understood),
    /// which another loop's success does not mend.
    @discardableResult
    func failed(_ error: EtcdError) -> UInt64? {
        let (first, returns) = lock.withLock {
            state.lastError = error.description
            guard state.reachable else { return (false, state.returns) }
            state.reachable = false
            state.unreachableSince = Date()
            state.outages += 1
            return (true, state.returns)
        }
        if first {
            logger.warning("etcd: \(error); forwarding goes on with the last membership (\(appliedPeers.count) peers), retrying with back-off")
        }
        if case .unavailable = error { return returns }
        return nil
    }

    // MARK: Hosts to peers

    func parse(_ keyValues: [EtcdKeyValue]) -> [IPAddress: HostRecord] {
        var hosts: [IPAddress: HostRecord] = [:]
        for kv in keyValues {
            guard let host = layout.address(ofHostKey: kv.key) else { continue }
            do { hosts[host] = try HostRecord.decode(kv.value, key: kv.key) } catch {
                logger.warning("etcd: \(error); that host is left out")
            }
        }
        return hosts
    }

    static func peer(_ record: HostRecord, at address: IPAddress) -> PeerSpec? {
        PeerSpec(address: address, subnet: record.subnet.flatMap { try? IPPrefix(parsing: $0) })
    }

    static func peers(of hosts: [IPAddress: HostRecord], except own: IPAddress) -> [IPAddress: PeerSpec] {
        var out: [IPAddress: PeerSpec] = [:]
        for (address, record) in hosts where address != own {
            if let p = peer(record, at: address) { out[address] = p }
        }
        return out
    }
}
