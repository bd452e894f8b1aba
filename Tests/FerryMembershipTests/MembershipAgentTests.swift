import FerryEtcd
@testable import FerryMembership
import FerrySettings
import FerryWire
import Foundation
import Testing

/// The agent over the in-memory store: hosts join and leave, leases lapse, the watch falls
/// behind a compaction, the store goes away and comes back, a host restarts, two hosts race
/// for a subnet. Each host is an agent with a recording target (the engine's peers).
@Suite struct MembershipAgentTests {
    static let layout = MembershipLayout(prefix: "/ferry/test")
    static let fast = MembershipAgent.Timing(renew: .milliseconds(20), backoffMinimum: .milliseconds(10),
                                              backoffMaximum: .milliseconds(50))

    final class Host: @unchecked Sendable {
        let agent: MembershipAgent
        let target: RecordingTarget
        let task: Task<Void, Never>

        init(agent: MembershipAgent, target: RecordingTarget, task: Task<Void, Never>) {
            self.agent = agent
            self.target = target
            self.task = task
        }

        /// Killed: stops renewing and watching, revokes nothing (its keys stay until they lapse).
        func kill() async {
            task.cancel()
            await task.value
        }

        /// A clean stop: its lease revoked.
        func stop() async {
            await kill()
            await agent.leave()
        }
    }

    static func start(_ store: MemoryStore, _ address: String, range: String? = nil, preferred: String? = nil) async throws -> Host {
        let allocator = try range.map { try SubnetAllocator(network: IPPrefix(parsing: $0), subnetLength: 30) }
        let agent = MembershipAgent(store: store, layout: layout, address: IPAddress(address)!, allocator: allocator,
                                    preferredSubnet: try preferred.map { try IPPrefix(parsing: $0) }, ttl: 30,
                                    version: "test", timing: fast, logger: quietLogger)
        try await agent.register()
        let peers = try await agent.snapshot()
        let target = RecordingTarget(peers)
        let task = Task { await agent.run(target: target, applied: peers) }
        return Host(agent: agent, target: target, task: task)
    }

    /// `ferry run --user`: one agent (the child process's) registers and lists, another (the
    /// parent's) goes on from there: the same lease, renewed from now on, the same subnet, and
    /// what changed between the listing and the hand-over (a host that joined) is not missed.
    @Test func anAgentGoesOnFromAnotherAgentsRegistration() async throws {
        let store = MemoryStore()
        let a = try await Self.start(store, "10.99.0.1")
        let allocator = try SubnetAllocator(network: IPPrefix(parsing: "10.16.0.0/24"), subnetLength: 30)
        func agent() -> MembershipAgent {
            MembershipAgent(store: store, layout: Self.layout, address: IPAddress("10.99.0.2")!, allocator: allocator, ttl: 30,
                            version: "test", timing: Self.fast, logger: quietLogger)
        }
        let child = agent()
        let subnet = try #require(try await child.register())
        _ = try await child.snapshot()
        let joined = child.joined
        // Through JSON, as over the pipe.
        let handed = try JSONDecoder().decode(MembershipAgent.Joined.self, from: JSONEncoder().encode(joined))
        #expect(handed == joined && handed.lease != 0 && handed.subnet == subnet.description)

        // A host joins before the parent follows.
        let c = try await Self.start(store, "10.99.0.3")
        let parent = agent()
        let peers = try parent.adopt(handed)
        #expect(peers.map(\.address.description) == ["10.99.0.1"], "the peers of the child's listing")
        #expect(parent.subnet == subnet && parent.lease == joined.lease)
        let target = RecordingTarget(peers)
        let task = Task { await parent.run(target: target, applied: peers) }
        #expect(await eventually { target.addresses == ["10.99.0.1", "10.99.0.3"] }, "the watch from the child's revision saw C join")

        // The handed-over lease is the one renewed: past the TTL on the store's clock, the host
        // is still there, registered once.
        for _ in 0..<3 {
            store.advance(seconds: 20)
            let renewals = store.renewals
            #expect(await eventually { store.renewals >= renewals + 2 })
        }
        #expect(await eventually { a.target.addresses.contains("10.99.0.2") })
        #expect(parent.status.registrations == 1 && parent.lease == joined.lease)
        task.cancel()
        await task.value
        await parent.leave()
        #expect(await eventually { a.target.addresses == ["10.99.0.3"] }, "leaving revokes the handed-over lease")
        await a.stop()
        await c.stop()
    }

    @Test func hostsJoinAndLeaveAndTheOwnHostIsNeverAPeer() async throws {
        let store = MemoryStore()
        let a = try await Self.start(store, "10.99.0.1")
        let b = try await Self.start(store, "10.99.0.2")
        let c = try await Self.start(store, "10.99.0.3")
        #expect(await eventually { a.target.addresses == ["10.99.0.2", "10.99.0.3"] })
        #expect(await eventually { b.target.addresses == ["10.99.0.1", "10.99.0.3"] })
        #expect(c.target.addresses == ["10.99.0.1", "10.99.0.2"], "the snapshot gave C every other host")

        // C stops cleanly: its lease revoked, the others drop it at once.
        await c.stop()
        #expect(await eventually { a.target.addresses == ["10.99.0.2"] && b.target.addresses == ["10.99.0.1"] })

        // B is killed: nothing renews its lease. Within the TTL on the store's clock (two
        // steps of 20 s, the live hosts renewing in between) it lapses and A drops B; A's own
        // lease, renewed every 20 ms, does not.
        await b.kill()
        store.advance(seconds: 20)
        let renewals = store.renewals
        #expect(await eventually { store.renewals >= renewals + 2 }, "A renews after the clock moved")
        #expect(a.target.addresses == ["10.99.0.2"], "20 s of 30: B is still there")
        store.advance(seconds: 20)
        #expect(await eventually { a.target.addresses.isEmpty })
        #expect(store.keys(under: Self.layout.hostsPrefix) == [Self.layout.hostKey(IPAddress("10.99.0.1")!)])
        #expect(a.agent.status.registrations == 1, "A's lease never lapsed")
        #expect(!a.target.calls.contains { $0.contains("10.99.0.1") }, "the own host never becomes a peer")
        await a.stop()
    }

    @Test func aLapsedLeaseIsReplacedAndTheSameSubnetKept() async throws {
        let store = MemoryStore()
        let a = try await Self.start(store, "10.99.0.1", range: "10.16.0.0/24")
        let b = try await Self.start(store, "10.99.0.2", range: "10.16.0.0/24")
        let subnet = try #require(a.agent.subnet)
        let lease = a.agent.lease
        #expect(await eventually { b.target.peers == [PeerSpec(address: IPAddress("10.99.0.1")!, subnet: subnet)] })
        #expect(b.agent.subnet != subnet)

        store.lapse(lease)
        #expect(await eventually { a.agent.status.registrations == 2 })
        #expect(a.agent.subnet == subnet)
        #expect(a.agent.lease != lease)
        #expect(store.value(Self.layout.subnetKey(subnet)).map { String(decoding: $0, as: UTF8.self) }?.contains("10.99.0.1") == true)
        #expect(await eventually { b.target.peers == [PeerSpec(address: IPAddress("10.99.0.1")!, subnet: subnet)] })
        #expect(b.target.calls.contains("del 10.99.0.1"), "B saw A go with its lease")
        await a.stop()
        await b.stop()
    }

    @Test func aWatchBehindACompactionReListsAndEndsWithTheRightPeers() async throws {
        let store = MemoryStore()
        let a = try await Self.start(store, "10.99.0.1")
        let b = try await Self.start(store, "10.99.0.2")
        let c = try await Self.start(store, "10.99.0.3")
        #expect(await eventually { a.target.addresses == ["10.99.0.2", "10.99.0.3"] })

        // A's watch falls behind: D joins and C dies while nothing is delivered, then the
        // history is compacted away.
        store.hold(true)
        let d = try await Self.start(store, "10.99.0.4")
        await c.kill()
        store.lapse(c.agent.lease)
        store.compact()
        store.hold(false)
        #expect(await eventually { a.target.addresses == ["10.99.0.2", "10.99.0.4"] })
        #expect(await eventually { b.target.addresses == ["10.99.0.1", "10.99.0.4"] })
        #expect(a.agent.status.relists >= 1, "A listed again")
        for h in [a, b, d] { await h.stop() }
    }

    @Test func theStoreAwayLeavesPeersAsTheyAreAndItsReturnCatchesUp() async throws {
        let store = MemoryStore()
        let a = try await Self.start(store, "10.99.0.1")
        let b = try await Self.start(store, "10.99.0.2")
        let c = try await Self.start(store, "10.99.0.3")
        #expect(await eventually { a.target.addresses == ["10.99.0.2", "10.99.0.3"] })

        store.isDown = true
        #expect(await eventually { !a.agent.isReachable })
        #expect(a.agent.status.lastError?.contains("unreachable") == true)
        // Meanwhile C dies, and A's own lease lapses (the outage outlasted the TTL).
        await c.kill()
        store.lapse(c.agent.lease)
        store.lapse(a.agent.lease)
        try await Task.sleep(for: .milliseconds(200))
        #expect(a.target.addresses == ["10.99.0.2", "10.99.0.3"], "forwarding goes on with the last membership")

        store.isDown = false
        #expect(await eventually { a.agent.isReachable })
        #expect(await eventually { a.target.addresses == ["10.99.0.2"] })
        #expect(await eventually { a.agent.status.registrations == 2 }, "A registered again")
        #expect(await eventually { b.target.addresses == ["10.99.0.1"] })
        #expect(a.agent.status.outages == 1, "one outage, said once")
        await a.stop()
        await b.stop()
    }

    @Test func aRestartedHostKeepsItsSubnet() async throws {
        let store = MemoryStore()
        let range = "10.16.0.0/26"  // sixteen /30s
        let a = try await Self.start(store, "10.99.0.1", range: range)
        let b = try await Self.start(store, "10.99.0.2", range: range)
        let subnet = try #require(a.agent.subnet)

        // Killed and restarted within the TTL: it finds its own subnet key and takes it again.
        await a.kill()
        let a2 = try await Self.start(store, "10.99.0.1", range: range)
        #expect(a2.agent.subnet == subnet)
        #expect(store.keys(under: Self.layout.subnetsPrefix).count == 2, "no second subnet taken")
        #expect(await eventually { b.target.peers.first?.subnet == subnet })

        // Stopped cleanly (its keys gone), then started with the subnet it wrote in subnet.env.
        await a2.stop()
        let other = try #require((0..<16).map { try! SubnetAllocator(network: IPPrefix(parsing: range), subnetLength: 30).subnet(at: $0) }
            .first { $0 != subnet && $0 != b.agent.subnet })
        let a3 = try await Self.start(store, "10.99.0.1", range: range, preferred: other.description)
        #expect(a3.agent.subnet == other, "the subnet held before is asked for first")
        await a3.stop()
        await b.stop()
    }

    /// A loop backing off wakes when the other gets through after a failure (so a lapsed lease
    /// is taken again as soon as the watch reaches etcd, not up to a back-off step later), and
    /// only then: an answer while etcd was reachable all along wakes nothing.
    @Test func aBackOffEndsWhenTheOtherLoopFindsTheStoreBack() async throws {
        let agent = MembershipAgent(store: MemoryStore(), layout: Self.layout, address: IPAddress("10.99.0.1")!, ttl: 30,
                                    version: "test", timing: Self.fast, logger: quietLogger)
        let ended = Flag()
        let returns = agent.returns
        let waiting = Task {
            await agent.backOff(.seconds(600), unlessReturnedSince: returns)
            ended.set()
        }
        agent.reached()
        #expect(await eventually(polls: 30) { ended.isSet } == false, "an answer with etcd reachable all along wakes nothing")
        #expect(agent.failed(.refused("permission denied")) == nil, "a refusal is not mended by another loop's success")
        #expect(agent.failed(.unavailable("test")) == returns, "etcd away: its next return wakes the back-off")
        #expect(!agent.isReachable)
        agent.reached()
        #expect(await eventually(polls: 1000) { ended.isSet }, "etcd's return ends the back-off")
        #expect(agent.returns == returns + 1)
        waiting.cancel()

        // Cancelled while it waits (the agent stopped): the back-off ends too.
        let cancelled = Flag()
        let stopped = Task {
            await agent.backOff(.seconds(600), unlessReturnedSince: agent.returns)
            cancelled.set()
        }
        try await Task.sleep(for: .milliseconds(50))
        stopped.cancel()
        #expect(await eventually(polls: 1000) { cancelled.isSet })
    }

    @Test func twoHostsRacingForOneSubnetEndWithTwo() async throws {
        let store = MemoryStore()
        let layout = Self.layout
        let raced = RaceOnce()
        // The first subnet A tries is taken by another host between A's listing and its create.
        store.beforeCreate = { key in
            if raced.first(key) { store.forcePut(key, value: SubnetRecord(address: "10.99.0.9").encoded()) }
        }
        let a = try await Self.start(store, "10.99.0.1", range: "10.16.0.0/24")
        let won = try #require(raced.key.flatMap(layout.subnet(ofKey:)))
        #expect(a.agent.subnet != nil && a.agent.subnet != won)
        #expect(store.keys(under: layout.subnetsPrefix).count == 2)
        await a.stop()
    }
}

final class RaceOnce: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var key: String?
    func first(_ k: String) -> Bool {
        lock.withLock {
            guard key == nil else { return false }
            key = k
            return true
        }
    }
}

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
