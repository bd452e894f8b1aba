import FerryLinux
import FerryWire
import Logging

// What may change under a running Ferry, looked at once a second by one thread (never by the
// workers): the underlay's MTU (`Engine+UnderlayMTU.swift`), whether the local address is still
// on this host, whether the TAP is up, and whether it is still a port of its bridge.
//
// What Ferry does about each, and why:
// - the local address gone (`ip addr del`, a DHCP lease lost): sends fail and are counted
//   (send_failed); Ferry says so once, keeps running, and carries again when it is back. The
//   sockets stay bound to it (Linux keeps a socket bound to an address that leaves), so nothing
//   needs reopening.
// - sends failing (the underlay link down, the route to the peers deleted: the kernel refuses
//   them with ENETDOWN or ENETUNREACH): each is counted (send_failed), and Ferry says once
//   that they fail and once that they stopped failing, never a line per packet.
// - the TAP set down (`ip link set ferry0 down`, ifdown, a network manager restarting): the
//   kernel refuses writes (EIO, counted as tap_write_failed) and hands over nothing to read;
//   Ferry says so once, keeps running, and carries again when it is up. An operator who sets a
//   link down for a moment expects the daemon behind it to be there when it comes up, as a
//   kernel vxlan device is.
// - the TAP no longer a port of the bridge given with --bridge (the bridge deleted, as when a
//   container network is removed, or the TAP detached): what Ferry carries then reaches no
//   container, and nothing would tell it where to go again, so Ferry ends, non-zero, naming
//   the cause; a supervisor restarting it meets the clear start-up error ("there is no bridge
//   named …") until the bridge is back. (The TAP deleted ends it at once: the workers fail.)
extension Engine {
    /// What the last look saw; at the start, what `init` made sure of (the local address on
    /// an interface, the TAP up), so that a change before the first look is still a change.
    struct Surroundings {
        var localAddressHeld = true
        var tapUp = true
        /// send_failed at the last look, and whether sends were failing then.
        var sendFailures: UInt64 = 0
        var sendsFailing = false
    }

    /// Why Ferry ends from the surroundings thread.
    struct SurroundingsError: Error, CustomStringConvertible {
        var description: String
    }

    /// One look around: logs what changed since the last, and throws when Ferry cannot go on.
    func watchSurroundings() throws(SurroundingsError) {
        if configuration.underlayMTU == nil { followUnderlayMTU() }
        let addressWasAway = !seen.localAddressHeld
        followLocalAddress()
        followSendFailures(addressWasAway: addressWasAway)
        let link = NetworkInterface(tap.name).linkState()
        if let link { followTAP(isUp: link.isUp) }
        if let bridge {
            let bridgeIndex = NetworkInterface(bridge).index
            // A link state that could not be read (netlink refused) says nothing; a TAP gone
            // ends the workers themselves.
            if let link, link.master == nil || link.master != bridgeIndex {
                let why = bridgeIndex == nil ? "the bridge \(bridge) was deleted" : "\(tap.name) was detached from \(bridge)"
                throw SurroundingsError(description: """
                    the TAP \(tap.name) is no longer a port of bridge \(bridge) (\(why)): what Ferry carries would reach no \
                    container; start Ferry again once \(bridge) exists
                    """)
            }
        }
    }

    /// Logs, once per change, the local address leaving this host and coming back.
    func followLocalAddress() {
        let holder = NetworkInterface.holding(configuration.local)
        guard (holder != nil) != seen.localAddressHeld else { return }
        seen.localAddressHeld = holder != nil
        if let holder {
            logger.notice("the local address \(configuration.local) is back (on \(holder)): carrying again")
        } else {
            logger.warning("""
                the local address \(configuration.local) is no longer on any interface of this host: sends to peers fail \
                (counted as \(DropReason.sendFailed.name)) and nothing arrives until it is back
                """)
        }
    }

    /// Logs, once per change, sends beginning to fail and no longer failing. `addressWasAway`:
    /// the local address was gone at the last look, so what failed since then failed for
    /// that, which Ferry has said (a route deleted just after the address came back is said
    /// at the next look; counted here, it was taken for the same failing and never said).
    func followSendFailures(addressWasAway: Bool) {
        let total = statistics().drops[DropReason.sendFailed.name] ?? 0
        let new = total &- seen.sendFailures
        seen.sendFailures = total
        // Without the local address they fail, and Ferry has said why.
        if new > 0, !seen.sendsFailing, seen.localAddressHeld, !addressWasAway {
            seen.sendsFailing = true
            logger.warning("""
                sends to peers fail (\(new) in the last second, counted as \(DropReason.sendFailed.name)): is the underlay \
                down, or the route to the peers gone? (ip route get PEER from \(configuration.local))
                """)
        } else if new == 0, seen.sendsFailing {
            seen.sendsFailing = false
            logger.notice("no send to a peer has failed for a second (\(total) failed in all)")
        }
    }

    /// Logs, once per change, the TAP set down and up again.
    func followTAP(isUp: Bool) {
        guard isUp != seen.tapUp else { return }
        seen.tapUp = isUp
        if isUp {
            logger.notice("the TAP \(tap.name) is up again: carrying again")
        } else {
            logger.warning("""
                the TAP \(tap.name) is down: frames from peers are dropped (counted as \(DropReason.tapWriteFailed.name)) \
                until it is up again (ip link set \(tap.name) up)
                """)
        }
    }
}
