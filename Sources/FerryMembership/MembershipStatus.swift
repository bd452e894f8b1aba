import Foundation

/// Membership as this host sees it, for `ferry ctl members`: the JSON of the `members` reply.
public struct MembershipStatus: Codable, Sendable, Equatable {
    /// The etcd prefix of the network.
    public var prefix: String
    /// This host's underlay address, and its subnet if it holds one.
    public var address: String
    public var subnet: String?
    /// The lease the host's keys are under (hex), and its TTL.
    public var lease: String
    public var ttl: Int
    /// The last etcd revision seen.
    public var revision: Int64
    /// Whether etcd answered the last time; since when it has not, and what went wrong last.
    public var reachable: Bool
    public var unreachableSince: String?
    public var lastError: String?
    /// Every host in the store (this one too), by address.
    public var hosts: [HostRecord]
    /// The peers the engine has from membership (addresses).
    public var peers: [String]
    /// Registrations (1, plus one per lapsed lease), full listings after the first, outages.
    public var registrations: Int
    public var relists: Int
    public var outages: Int
    /// Watches (and the listings that restart them) that failed on an error.
    public var watchFailures: Int
}

extension MembershipAgent {
    /// What `ferry ctl members` shows.
    public var status: MembershipStatus {
        lock.withLock {
            MembershipStatus(
                prefix: layout.prefix, address: address.description, subnet: state.subnet?.description,
                lease: String(state.lease, radix: 16), ttl: ttl, revision: state.revision, reachable: state.reachable,
                unreachableSince: state.unreachableSince.map { ISO8601DateFormatter().string(from: $0) },
                lastError: state.lastError,
                hosts: state.hosts.sorted { $0.key < $1.key }.map(\.value),
                peers: state.applied.keys.sorted().map(\.description),
                registrations: state.registrations, relists: state.relists, outages: state.outages,
                watchFailures: state.watchFailures)
        }
    }
}
