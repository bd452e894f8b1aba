import ArgumentParser
import FerryControl
import FerryMembership
import Foundation

/// `ferry ctl members`: membership as a running `ferry run --etcd` sees it.
struct CtlMembersCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "members",
        abstract: "The hosts in etcd as this ferry sees them: each one's subnet and since when, the revision, whether etcd answers."
    )

    @OptionGroup var socket: ControlSocketOptions

    @Flag(name: .long, help: "Print the reply as JSON.")
    var json = false

    func run() throws {
        let path = try socket.socketPath()
        let reply: [UInt8]
        let status: MembershipStatus
        do {
            reply = try ControlClient.send(.members, to: path)
            status = try ControlReply.decode(MembershipStatus.self, from: reply)
        } catch {
            throw ToolError(error.description)
        }
        if json {
            print(String(decoding: reply, as: UTF8.self))
            return
        }
        print(Self.render(status), terminator: "")
    }

    static func render(_ s: MembershipStatus) -> String {
        var out = "etcd \(s.prefix): " + (s.reachable ? "reachable" : "UNREACHABLE since \(s.unreachableSince ?? "?")")
            + ", revision \(s.revision)" + (s.reachable || s.lastError == nil ? "" : " (\(s.lastError!))") + "\n"
        out += "this host \(s.address)" + (s.subnet.map { ", subnet \($0)" } ?? "") + ", lease \(s.lease) (TTL \(s.ttl) s)\n\n"
        out += pad("host", 40) + pad("subnet", 20) + pad("since", 22) + "version\n"
        for h in s.hosts {
            let mark = h.address == s.address ? " (this host)" : (s.peers.contains(h.address) ? "" : " (not a peer)")
            out += pad(h.address + mark, 40) + pad(h.subnet ?? "-", 20) + pad(h.since, 22) + h.version + "\n"
        }
        out += "\(s.hosts.count) host\(s.hosts.count == 1 ? "" : "s"), \(s.peers.count) peer\(s.peers.count == 1 ? "" : "s"); "
            + "registrations \(s.registrations), re-listings \(s.relists), outages \(s.outages)\n"
        return out
    }
}
