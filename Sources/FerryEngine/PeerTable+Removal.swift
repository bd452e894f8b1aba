import Atomics
import FerryWire

// Configured peers removed, and peers replaced, at run time (`ferry ctl peer del`, a reload).
//
// A slot is never emptied: the packet path reads slots `0..<count` without a lock, and the
// forwarding table and the per-peer counters name peers by slot. A removed peer's slot gets a
// stand-in (`Peer(vacating:)`: inactive, found by no lookup), and the peer goes on the retire
// list, freed once every worker has passed a quiescent point (as a learned peer that loses its
// slot). The slot is a `Vacancy` until it may be given again: that needs every worker past the
// removal (no step still holds the slot's index from before it, so none can learn a MAC behind
// it any more) and, after that, the forwarding table cleared of the slot (`ForwardingState
// .settlePeerChanges`, which then marks it ready).

/// A removed peer's slot, waiting to be given again.
struct Vacancy {
    var slot: Int
    /// The epoch the removal began: once every worker has announced it, none holds the slot.
    var epoch: UInt64
    /// The forwarding table holds nothing for the slot any more: it may be given.
    var isReady = false
}

extension PeerTable {
    /// What `remove` did.
    public enum Removal: Equatable, Sendable {
        /// The peer left slot `slot`.
        case removed(slot: Int)
        /// No peer at that address.
        case unknown
        /// The peer at that address was learned (accept-any mode): it leaves by ageing, not by
        /// removal (its next packet would make it a peer again).
        case learned(slot: Int)
    }

    /// Removes the configured peer at `address`: its slot gets a stand-in at once (floods stop
    /// at every worker's next step; packets from it are no one's), and the peer is freed once
    /// no worker can hold it. The slot waits, a vacancy, until `readyVacancies` finds it
    /// quiescent and the caller has cleared the forwarding table of it.
    public func remove(_ address: IPAddress) -> Removal {
        adding.withLock { _ in
            guard let i = index(of: address) else { return .unknown }
            guard !owners[i].isLearned else { return .learned(slot: i) }
            let epoch = replaceLocked(i, with: Peer(vacating: owners[i]))
            vacancies.append(Vacancy(slot: i, epoch: epoch))
            vacantCount.wrappingIncrement(ordering: .relaxed)
            return .removed(slot: i)
        }
    }

    /// Puts `peer` in slot `i` in place of the learned peer there (accept-any mode; `ferry ctl
    /// peer add` of an address already learned): same slot, so what the forwarding table holds
    /// behind it stays right, and its counters go on from where the learned peer's were.
    /// False if slot `i` no longer holds a learned peer at `peer`'s address.
    public func promote(_ i: Int, to peer: Peer) -> Bool {
        adding.withLock { _ in
            guard i < owners.count, owners[i].isLearned, !owners[i].isVacant, owners[i].address == peer.address else { return false }
            // Claimed as a packet from it would: a retired one counts as back (then leaves).
            if owners[i].active.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged {
                retiredCount.wrappingDecrement(ordering: .relaxed)
            }
            peer.counterBaseline = owners[i].counterBaseline
            replaceLocked(i, with: peer)
            return true
        }
    }

    /// Stores `peer` in slot `i`, retiring the one there (freed once no worker can hold it);
    /// returns the epoch its leaving began. Under `adding`.
    @discardableResult
    func replaceLocked(_ i: Int, with peer: Peer) -> UInt64 {
        let leaving = owners[i]
        owners[i] = peer
        slot(i).store(.passUnretained(peer), ordering: .releasing)
        // After the store: a worker that reads this epoch reads the new peer.
        let left = epoch.wrappingIncrementThenLoad(ordering: .acquiringAndReleasing)
        Atomics.atomicMemoryFence(ordering: .sequentiallyConsistent)
        retired.append((leaving, left))
        reclaimLocked()
        return left
    }

    /// The vacancies every worker has passed (no step holds their slots' indices from before
    /// the removal) and that are not ready yet: the slots whose forwarding entries the caller
    /// clears, for the last time, before `markReady`.
    public func quiescentVacancies() -> [Int] {
        adding.withLock { _ in
            guard vacancies.contains(where: { !$0.isReady }) else { return [] }
            let oldest = oldestAnnouncedEpoch()
            return vacancies.filter { !$0.isReady && $0.epoch <= oldest }.map(\.slot)
        }
    }

    /// Slots `slots` (from `quiescentVacancies`) are cleared: they may be given to new peers.
    public func markReady(_ slots: [Int]) {
        adding.withLock { _ in
            for k in vacancies.indices where slots.contains(vacancies[k].slot) { vacancies[k].isReady = true }
        }
    }

    /// Slots of removed peers not given again yet.
    public var vacantSlots: Int { vacantCount.load(ordering: .relaxed) }

    /// The configured peers now (not learned ones, nor removed ones' stand-ins), by slot.
    public var configured: [Peer] { adding.withLock { _ in owners.filter { !$0.isLearned && !$0.isVacant } } }
}
