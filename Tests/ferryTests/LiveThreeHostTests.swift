import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// Three hosts on an underlay bridge, Ferry (VXLAN) on each peered with the other two: what is
    /// flooded, what is unicast, what the forwarding table learns, and how it follows a MAC that
    /// moves to another host. The counters are read with `ferry ctl` as an operator would.
    @Suite struct LiveThreeHostTests {
        static let pings = 10

        @Test func floodLearnUnicastAndFollowAMove() throws {
            let live = try LiveLab(tag: "3host", hosts: 3, withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            for i in live.hosts.indices { try live.startFerry(on: i, tunnel: ["--vni", "42"]) }
            let (h0, h1, h2) = (live.host(0), live.host(1), live.host(2))
            let (a, b) = (h0.containers[0], h1.containers[0])
            let peer1 = h1.underlay, peer2 = h2.underlay
            #expect(b.mac == "02:42:0a:12:00:02")

            // 1. A unicast frame to a MAC nobody has learned is flooded to both peers. The host
            //    itself sends it, to a neighbour entry pointing at a MAC that exists nowhere.
            let start = try live.stats(0)
            #expect(start.peers.map(\.address).sorted() == [peer1, peer2], "\(start)")
            let ghostMAC = "02:42:0a:12:00:63"
            try live.exec(h0.namespace, ["ip", "neigh", "replace", "10.18.0.99", "lladdr", ghostMAC, "dev", "bridge0", "nud", "permanent"])
            _ = try live.ping(from: h0.namespace, to: "10.18.0.99", count: 1)
            let ghost = try live.waitForStats(0) { $0.tx(peer1) > start.tx(peer1) && $0.tx(peer2) > start.tx(peer2) }
            #expect(try ghost.counter("flooded_frames") - start.counter("flooded_frames") >= 1, "unknown unicast not flooded: \(ghost)")
            #expect(ghost.tx(peer1) - start.tx(peer1) >= 1, "unknown unicast did not reach \(peer1): \(ghost)")
            #expect(ghost.tx(peer2) - start.tx(peer2) >= 1, "unknown unicast did not reach \(peer2): \(ghost)")
            #expect(try ghost.counter("unicast_frames") == start.counter("unicast_frames"), "\(ghost)")
            try live.exec(h0.namespace, ["ip", "neigh", "del", "10.18.0.99", "dev", "bridge0"])

            // 2. The first ping: h0 asks for 10.18.0.2 with a broadcast ARP, flooded to both peers.
            let beforeFirst = try live.stats(0)
            let first = try live.ping(from: a.namespace, to: b.address, count: 3)
            try #require(first.received >= 1, "no ping through three Ferry hosts: \(first)")
            let afterFirst = try live.stats(0)
            #expect(try afterFirst.counter("flooded_frames") - beforeFirst.counter("flooded_frames") >= 1, "ARP not flooded: \(afterFirst)")
            #expect(afterFirst.tx(peer1) - beforeFirst.tx(peer1) >= 1, "\(afterFirst)")
            #expect(afterFirst.tx(peer2) - beforeFirst.tx(peer2) >= 1, "the broadcast ARP did not reach \(peer2): \(afterFirst)")
            #expect(try live.fdb(0).peer(of: b.mac) == peer1)

            // 3. Once learned, h1c0's MAC is unicast to h1 only: not one frame more to h2.
            let base = try live.stats(0)
            let steady = try live.ping(from: a.namespace, to: b.address, count: Self.pings, interval: 0.1)
            #expect(steady.received == Self.pings, "\(steady)")
            let after = try live.waitForStats(0, timeout: 3) { $0.tx(peer1) - base.tx(peer1) >= UInt64(Self.pings) }
            let flooded = try after.counter("flooded_frames") - base.counter("flooded_frames")
            #expect(try after.counter("unicast_frames") - base.counter("unicast_frames") >= UInt64(Self.pings), "\(after)")
            #expect(after.tx(peer1) - base.tx(peer1) >= UInt64(Self.pings), "\(after)")
            #expect(flooded == 0, "frames flooded in steady state: \(after)")
            #expect(after.tx(peer2) - base.tx(peer2) == 0, "frames for a MAC behind \(peer1) went to \(peer2): \(after)")
            let fdb = try live.fdb(0)
            #expect(fdb.peer(of: b.mac) == peer1, "fdb: \(fdb.map { "\($0.mac)->\($0.peer)" })")
            #expect(fdb.peer(of: ghostMAC) == nil, "a MAC nobody sent from was learned")

            // 4. The MAC moves: h1c0 goes down and h2's container takes its MAC and address. It
            //    speaks first (a broadcast ARP for h0c0, flooded by h2's Ferry), so h0 learns the
            //    MAC behind h2, and everything for it goes there from then on.
            try live.exec(b.namespace, ["ip", "link", "set", "eth0", "down"])
            let moved = h2.containers[0]
            try live.readdress(moved.namespace, mac: b.mac, address: b.address, onLink: h0.subnet)
            let beforeMove = try live.stats(0)
            let fromMoved = try live.ping(from: moved.namespace, to: a.address, count: Self.pings, interval: 0.1)
            #expect(fromMoved.received >= Self.pings - 1, "the moved container cannot reach h0c0: \(fromMoved)")
            let afterMove = try live.waitForStats(0, timeout: 3) { try $0.counter("fdb_moved") > beforeMove.counter("fdb_moved") }
            #expect(try afterMove.counter("fdb_moved") - beforeMove.counter("fdb_moved") >= 1, "no move counted: \(afterMove)")
            let fdbMoved = try live.fdb(0)
            #expect(fdbMoved.peer(of: b.mac) == peer2, "fdb after the move: \(fdbMoved.map { "\($0.mac)->\($0.peer)" })")
            // The echo replies to the moved container went to h2.
            #expect(afterMove.tx(peer2) - beforeMove.tx(peer2) >= UInt64(fromMoved.received), "\(afterMove)")

            // 5. Traffic h0 starts towards the moved MAC goes to h2, none to h1 but floods.
            let base2 = try live.stats(0)
            let toMoved = try live.ping(from: a.namespace, to: b.address, count: Self.pings, interval: 0.1)
            #expect(toMoved.received == Self.pings, "the moved container does not answer: \(toMoved)")
            let after2 = try live.waitForStats(0, timeout: 3) { $0.tx(peer2) - base2.tx(peer2) >= UInt64(Self.pings) }
            let flooded2 = try after2.counter("flooded_frames") - base2.counter("flooded_frames")
            #expect(after2.tx(peer2) - base2.tx(peer2) >= UInt64(Self.pings), "\(after2)")
            #expect(try after2.counter("unicast_frames") - base2.counter("unicast_frames") >= UInt64(Self.pings), "\(after2)")
            #expect(after2.tx(peer1) - base2.tx(peer1) == flooded2, "unicast frames still go to the old host \(peer1): \(after2)")
            #expect(flooded2 == 0, "\(after2)")
            #expect(after2.totalDrops == 0, "drops: \(after2.drops())")

            let table = try live.ctl(0, "stats", json: false)
            let fdbTable = try live.ctl(0, "fdb", json: false)
            print("ferry ctl stats on \(h0.namespace) (\(h0.underlay)) after the three-host test:\n\(table)")
            print("ferry ctl fdb on \(h0.namespace):\n\(fdbTable)")
        }
    }
}
