import Glibc

// What a running Ferry asks of its TAP now and then (once a second, not per packet): whether
// it is up, and which bridge it is a port of, from rtnetlink (RTM_GETLINK), which needs no
// privilege and no /sys of the right namespace.
extension NetworkInterface {
    /// An interface's state as the kernel reports it now.
    public struct LinkState: Equatable, Sendable {
        /// IFF_UP: set administratively (`ip link set … up`).
        public var isUp: Bool
        /// The index of the device it is enslaved to (a bridge it is a port of), if any.
        public var master: Int32?

        public init(isUp: Bool, master: Int32?) {
            self.isUp = isUp
            self.master = master
        }
    }

    /// The interface's state, or nil when there is no such interface (or netlink did not answer).
    public func linkState() -> LinkState? {
        guard let index, let netlink = Netlink() else { return nil }
        defer { close(netlink.fd) }
        // struct ifinfomsg { u8 family; u8 pad; u16 type; s32 index; u32 flags; u32 change }.
        let body = [UInt8(AF_UNSPEC), 0, 0, 0] + withUnsafeBytes(of: index) { Array($0) } + [UInt8](repeating: 0, count: 8)
        guard let reply = netlink.request(type: Self.rtmGetLink, body: body, reply: Self.rtmNewLink), reply.count >= 16 else {
            return nil
        }
        let flags = reply.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self) }
        var master: Int32?
        Netlink.forEachAttribute(reply, from: 16) { type, value in
            if type == Self.iflaMaster, value.count >= 4 {
                let m = value.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
                if m != 0 { master = m }
            }
        }
        return LinkState(isUp: flags & UInt32(IFF_UP) != 0, master: master)
    }

    // From <linux/rtnetlink.h> and <linux/if_link.h>.
    static let rtmNewLink: UInt16 = 16, rtmGetLink: UInt16 = 18
    static let iflaMaster: UInt16 = 10
}
