import FerryLinux
import Foundation
import Testing

/// What a running Ferry reads of its TAP once a second (`linkState`), against devices the test
/// builds in a namespace of its own: up or down as set, the bridge it is a port of, and nothing
/// for a device that is gone.
@Suite struct NetworkInterfaceTests {
    @Test(.enabled(if: Linux.isRoot, "builds a namespace")) func theLinkStateFollowsUpDownAndTheBridge() throws {
        try Linux.withNamespace("fli-link") { ns in
            try Linux.sh("ip", "-n", ns, "link", "add", "br0", "type", "bridge")
            try Linux.sh("ip", "-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
            try Linux.sh("ip", "-n", ns, "link", "set", "d0", "master", "br0", "up")
            func state() throws -> NetworkInterface.LinkState? { try Linux.inNamespace(ns) { NetworkInterface("d0").linkState() } }
            var states = [try state()]
            try Linux.sh("ip", "-n", ns, "link", "set", "d0", "down")
            states.append(try state())
            try Linux.sh("ip", "-n", ns, "link", "del", "br0")
            states.append(try state())
            try Linux.sh("ip", "-n", ns, "link", "del", "d0")
            states.append(try state())
            // The bridge's index, read before it went, from the first state's master.
            let bridge = try #require(states[0]?.master, "d0 on br0 has no master: \(String(describing: states[0]))")
            #expect(states[0] == .init(isUp: true, master: bridge))
            #expect(states[1] == .init(isUp: false, master: bridge))
            #expect(states[2] == .init(isUp: false, master: nil), "a deleted bridge leaves its ports without a master")
            #expect(states[3] == nil, "a device that is gone has no state")
        }
    }
}
