// The control socket's protocol as both ends see it: request lines parsed, replies and refusals
// encoded and read back, without a running ferry.

import FerryControl
import FerryEngine
import FerryWire
import Foundation
import Testing

@Suite("Control protocol")
struct ControlProtocolTests {
    @Test("a request line is its word, whitespace and a CR around it ignored")
    func parsesRequestLines() throws {
        #expect(try ControlRequest(line: "stats") == .stats)
        #expect(try ControlRequest(line: "fdb") == .fdb)
        #expect(try ControlRequest(line: "  stats\r") == .stats)
        #expect(try ControlRequest(line: "\tfdb \n") == .fdb)
        for request in ControlRequest.allCases {
            #expect(request.line == request.rawValue + "\n")
            #expect(try ControlRequest(line: request.line) == request)
        }
    }

    @Test("an empty, unknown or overlong request is refused with a message that lists the requests")
    func refusesOtherLines() {
        #expect(throws: ControlRequestError.empty) { try ControlRequest(line: "") }
        #expect(throws: ControlRequestError.empty) { try ControlRequest(line: " \r") }
        #expect(throws: ControlRequestError.unknown("STATS")) { try ControlRequest(line: "STATS") }
        #expect(throws: ControlRequestError.unknown("stats fdb")) { try ControlRequest(line: "stats fdb") }
        let long = String(repeating: "s", count: ControlRequest.maximumLength + 1)
        #expect(throws: ControlRequestError.tooLong) { try ControlRequest(line: long) }
        #expect(throws: ControlRequestError.unknown(String(long.dropLast()))) { try ControlRequest(line: long.dropLast()) }

        #expect(ControlRequestError.unknown("nope").description.hasPrefix("unknown request 'nope'; ask for stats, fdb, members, capture [point=P]"))
        #expect(ControlRequestError.empty.description.hasSuffix("fdb del MAC, reload)"))
        #expect(!ControlRequestError.tooLong.description.contains("sss"), "an overlong request is not quoted back")
    }

    @Test("a change is its words, with its arguments checked: each form, and each wrong argument refused with what is wrong")
    func parsesChanges() throws {
        let subnet = try IPPrefix(parsing: "10.19.0.0/16")
        let peer = try #require(IPAddress("10.99.0.3")), mac = try #require(MACAddress("02:42:0a:13:00:02"))
        #expect(try ControlChange(line: "peer add 10.99.0.3=10.19.0.0/16") == .addPeer(peer, subnet: subnet))
        #expect(try ControlChange(line: " peer  add 10.99.0.3\r\n") == .addPeer(peer, subnet: nil))
        #expect(try ControlChange(line: "peer del 10.99.0.3") == .removePeer(peer))
        #expect(try ControlChange(line: "fdb add 02:42:0a:13:00:02 10.99.0.3") == .setEntry(mac, peer: peer))
        #expect(try ControlChange(line: "fdb del 02:42:0a:13:00:02") == .removeEntry(mac))
        #expect(try ControlChange(line: "reload") == .reload)
        for change in [ControlChange.addPeer(peer, subnet: subnet), .addPeer(peer, subnet: nil), .removePeer(peer),
                       .setEntry(mac, peer: peer), .removeEntry(mac), .reload] {
            #expect(try ControlChange(line: change.line) == change)
        }
        // Not changes: queries and what the query parser refuses.
        #expect(try ControlChange(line: "fdb") == nil)
        #expect(try ControlChange(line: "stats") == nil)
        #expect(try ControlChange(line: "reload now") == nil)

        func refusal(_ line: String) -> String {
            do { _ = try ControlChange(line: line); return "" } catch { return error.description }
        }
        #expect(refusal("peer add 10.99.0.x").contains("'10.99.0.x' is not an IP address"))
        #expect(refusal("peer add 10.99.0.3=10.19.0.1/16").contains("write 10.19.0.0/16"))
        #expect(refusal("peer add").contains("write peer add ADDRESS[=SUBNET]"))
        #expect(refusal("peer remove 10.99.0.3").contains("peer del ADDRESS"))
        #expect(refusal("fdb add 02:42:0a:13:00 10.99.0.3").contains("'02:42:0a:13:00' is not a MAC address"))
        #expect(refusal("fdb add 02:42:0a:13:00:02").contains("write fdb add MAC PEER"))
        #expect(refusal("fdb del").contains("write fdb del MAC"))
    }

    @Test("a change report round-trips")
    func changeReportRoundTrips() throws {
        let report = ControlChangeReport(applied: ["peer 10.99.0.3 added"], needsRestart: ["vni: 42 -> 43"], failed: [])
        #expect(try ControlReply.decode(ControlChangeReport.self, from: Array(ControlReply.encode(report).utf8)) == report)
    }

    @Test("a refusal is one JSON object whose message survives quotes, backslashes and control characters")
    func refusalIsEscapedJSON() throws {
        let nasty = "unknown request 'a\"b\\c\u{1}\n}'; ask for stats or fdb"
        let reply = ControlReply.refusal(nasty)
        #expect(!reply.contains("\n"), "one line: \(reply)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any])
        #expect(object.count == 1)
        #expect(object["error"] as? String == nasty)

        #expect(throws: ControlClientError.refused(nasty)) {
            try ControlReply.decode(Statistics.self, from: Array(reply.utf8))
        }
        #expect(throws: ControlClientError.refused(nasty)) {
            try ControlReply.decode([FDBEntry].self, from: Array(reply.utf8))
        }
    }

    @Test("replies round-trip: what the server encodes, the client decodes")
    func repliesRoundTrip() throws {
        let statistics = try JSONDecoder().decode(Statistics.self, from: Data("""
            {"counters": {"sentPackets": 3}, "drops": {"shortPacket": 1}, "fdbEntries": 2,
             "peers": [{"address": "10.99.0.2", "learned": false, "txPackets": 1, "txBytes": 2, "rxPackets": 3, "rxBytes": 4}],
             "workers": []}
            """.utf8))
        let reply = ControlReply.encode(statistics)
        #expect(try ControlReply.decode(Statistics.self, from: Array(reply.utf8)) == statistics)
        // Keys sorted, so that replies compare as text.
        #expect(reply.firstRange(of: "\"counters\"")!.lowerBound < reply.firstRange(of: "\"workers\"")!.lowerBound)

        let entries = try JSONDecoder().decode([FDBEntry].self, from: Data("""
            [{"mac": "02:00:00:00:00:01", "peer": "10.99.0.2", "ageSeconds": 5, "isStatic": false}]
            """.utf8))
        #expect(try ControlReply.decode([FDBEntry].self, from: Array(ControlReply.encode(entries).utf8)) == entries)
        #expect(try ControlReply.decode([FDBEntry].self, from: Array(ControlReply.encode([FDBEntry]()).utf8)).isEmpty)
    }

    @Test("a reply that is neither the value nor a refusal is called malformed, not refused")
    func malformedReply() {
        for text in ["", "not json", #"{"counters": 1}"#, #"{"error": 5}"#] {
            #expect {
                try ControlReply.decode(Statistics.self, from: Array(text.utf8))
            } throws: { error in
                guard case ControlClientError.malformedReply = error else { return false }
                return true
            }
        }
    }

    @Test("no ferry at the socket path is a system error that says so")
    func noServer() {
        #expect {
            try ControlClient.send(.stats, to: "/nonexistent-ferry-dir/ferry.sock")
        } throws: { error in
            guard case ControlClientError.system = error else { return false }
            return "\(error)".contains("no ferry is running")
        }
    }
}
