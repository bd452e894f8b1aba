import FerryMembership
import FerrySettings
import FerryWire
import Foundation
import Logging

enum PeerSpecs {
    static func make(_ a: IPAddress, _ s: IPPrefix?) -> PeerSpec { PeerSpec(address: a, subnet: s) }
}

/// The engine as membership sees it: the peers it was given, and every call in order.
final class RecordingTarget: MembershipTarget, @unchecked Sendable {
    private let lock = NSLock()
    private var current: [IPAddress: PeerSpec] = [:]
    private var log: [String] = []
    /// Addresses whose addition fails (a subnet that overlaps, say).
    var refuse: Set<IPAddress> = []

    init(_ initial: [PeerSpec] = []) { for p in initial { current[p.address] = p } }

    func addPeer(_ peer: PeerSpec) throws {
        try lock.withLock {
            if refuse.contains(peer.address) { throw MembershipError("refused \(peer.address)") }
            current[peer.address] = peer
            log.append("add \(peer)")
        }
    }

    func removePeer(_ address: IPAddress) throws {
        lock.withLock {
            current.removeValue(forKey: address)
            log.append("del \(address)")
        }
    }

    var peers: [PeerSpec] { lock.withLock { current.values.sorted { $0.address < $1.address } } }
    var addresses: Set<String> { Set(peers.map(\.address.description)) }
    var calls: [String] { lock.withLock { log } }
}

/// Polls `condition` every 10 ms until it holds, `polls` times at most; whether it held.
/// Counted in polls, not seconds: in CI's one test process the suites that block their threads
/// (tools run synchronously) held both threads of the cooperative pool for over a minute, so
/// neither the agents' tasks nor this loop ran, and a 60 s deadline passed with the condition
/// looked at twice. A condition that never holds still ends the wait (6 000 polls, a minute or
/// more).
func eventually(polls: Int = 6000, _ condition: () -> Bool) async -> Bool {
    for _ in 0..<polls {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

let quietLogger: Logger = {
    var l = Logger(label: "membership-test")
    l.logLevel = .critical
    return l
}()
