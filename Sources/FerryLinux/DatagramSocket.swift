import CFerryLinux
import Glibc
import SystemPackage
import FerryWire

/// A non-blocking datagram socket moved in batches: the UDP socket VXLAN arrives on, the raw
/// IPPROTO_GRE socket GRE arrives on, and the header-including raw socket both are sent from.
public final class DatagramSocket {
    public let fd: Int32
    public let isIPv6: Bool

    init(fd: Int32, isIPv6: Bool) {
        self.fd = fd
        self.isIPv6 = isIPv6
    }

    deinit { close(fd) }

    /// A UDP socket bound to `local`:`port`. With `reusePort`, one of a group of sockets bound
    /// to the same port (SO_REUSEPORT), among which the kernel spreads datagrams by the hash of
    /// their addresses and ports, so a flow always reaches the same socket.
    public static func udp(local: IPAddress, port: UInt16, reusePort: Bool = false) throws(LinuxError) -> DatagramSocket {
        let socket = try open(family: local.isIPv6 ? AF_INET6 : AF_INET, type: Int32(SOCK_DGRAM.rawValue), protocol: Int32(IPPROTO_UDP))
        if reusePort {
            var one: Int32 = 1
            try socket.setOption(SOL_SOCKET, SO_REUSEPORT, &one, "SO_REUSEPORT")
        }
        try socket.bind(local, port: port, what: "UDP port \(port)")
        return socket
    }

    /// A group of `count` UDP sockets sharing `local`:`port` (SO_REUSEPORT when more than one).
    /// A port already held by anyone is refused, as one socket's bind would be: a group only
    /// forms on a free port, so that another program cannot quietly take a share of the traffic.
    public static func udpGroup(local: IPAddress, port: UInt16, count: Int) throws(LinuxError) -> [DatagramSocket] {
        precondition(count >= 1)
        if count == 1 { return [try udp(local: local, port: port)] }
        do { _ = try udp(local: local, port: port) }  // closed at once: the port was free
        var group: [DatagramSocket] = []
        for _ in 0..<count { group.append(try udp(local: local, port: port, reusePort: true)) }
        return group
    }

    /// A UDP socket that sends VXLAN from `local`:`port` with the outer TTL, TOS and DF fixed,
    /// so that the kernel builds the headers and can segment one send into many packets
    /// (UDP_SEGMENT). Its checksum is always computed: Linux refuses GSO without one.
    /// With `reusePort`, several workers each hold a sender on the same port.
    public static func udpSender(local: IPAddress, port: UInt16, ttl: UInt8, tos: UInt8,
                                 dontFragment: Bool, reusePort: Bool = false) throws(LinuxError) -> DatagramSocket {
        let socket = try udp(local: local, port: port, reusePort: reusePort)
        var ttlValue = Int32(ttl), tosValue = Int32(tos)
        if local.isIPv6 {
            try socket.setOption(Int32(IPPROTO_IPV6), IPV6_UNICAST_HOPS, &ttlValue, "IPV6_UNICAST_HOPS")
            try socket.setOption(Int32(IPPROTO_IPV6), IPV6_TCLASS, &tosValue, "IPV6_TCLASS")
            var pmtu = Int32(IPV6_PMTUDISC_PROBE)  // never fragment, never shrink below the device MTU
            try socket.setOption(Int32(IPPROTO_IPV6), IPV6_MTU_DISCOVER, &pmtu, "IPV6_MTU_DISCOVER")
        } else {
            try socket.setOption(Int32(IPPROTO_IP), IP_TTL, &ttlValue, "IP_TTL")
            try socket.setOption(Int32(IPPROTO_IP), IP_TOS, &tosValue, "IP_TOS")
            // DF set: PROBE sets DF without shrinking to a learnt path MTU; unset: DONT.
            var pmtu = Int32(dontFragment ? IP_PMTUDISC_PROBE : IP_PMTUDISC_DONT)
            try socket.setOption(Int32(IPPROTO_IP), IP_MTU_DISCOVER, &pmtu, "IP_MTU_DISCOVER")
        }
        return socket
    }

    /// Asks the kernel to join consecutive datagrams of a flow into one receive (UDP_GRO), the
    /// segment size given in a control message. False when the kernel says no.
    @discardableResult
    public func enableGRO() -> Bool {
        var one: Int32 = 1
        return (try? setOption(CFERRY_SOL_UDP, CFERRY_UDP_GRO, &one, "UDP_GRO")) != nil
    }

    /// Asks the kernel to report each datagram's outer TOS (IPv4) or traffic class (IPv6) in a
    /// control message, for RFC 6040 decapsulation. False when it says no.
    @discardableResult
    public func enableTOSReceive() -> Bool {
        var one: Int32 = 1
        return isIPv6 ? (try? setOption(Int32(IPPROTO_IPV6), IPV6_RECVTCLASS, &one, "IPV6_RECVTCLASS")) != nil
                      : (try? setOption(Int32(IPPROTO_IP), IP_RECVTOS, &one, "IP_RECVTOS")) != nil
    }

    /// A raw socket receiving IP protocol `proto` (IPPROTO_GRE) sent to `local`. Over IPv4
    /// each datagram arrives with its IP header; over IPv6 without.
    public static func raw(protocol proto: Int32, local: IPAddress) throws(LinuxError) -> DatagramSocket {
        let socket = try open(family: local.isIPv6 ? AF_INET6 : AF_INET, type: Int32(SOCK_RAW.rawValue), protocol: proto)
        try socket.bind(local, port: 0, what: "raw IP protocol \(proto)")
        return socket
    }

    /// A raw socket that sends whole IP packets, headers included (IP_HDRINCL / IPV6_HDRINCL):
    /// Ferry writes every outer header itself, so the UDP source port can follow the inner
    /// flow and TOS/DF can be inherited per packet.
    public static func headerIncluding(ipv6: Bool) throws(LinuxError) -> DatagramSocket {
        let socket = try open(family: ipv6 ? AF_INET6 : AF_INET, type: Int32(SOCK_RAW.rawValue), protocol: Int32(IPPROTO_RAW))
        var one: Int32 = 1
        if ipv6 {
            try socket.setOption(Int32(IPPROTO_IPV6), CFERRY_IPV6_HDRINCL, &one, "IPV6_HDRINCL")
        } else {
            try socket.setOption(Int32(IPPROTO_IP), IP_HDRINCL, &one, "IP_HDRINCL")
        }
        return socket
    }

    /// A packet socket that sends whole IP packets straight to a device (AF_PACKET, SOCK_DGRAM:
    /// the kernel adds the Ethernet header for the destination's sockaddr_ll), skipping the IP
    /// output path, netfilter and the queueing discipline (PACKET_QDISC_BYPASS). It receives
    /// nothing (protocol 0).
    public static func linkSender() throws(LinuxError) -> DatagramSocket {
        let socket = try open(family: AF_PACKET, type: Int32(SOCK_DGRAM.rawValue), protocol: 0)
        var one: Int32 = 1
        try socket.setOption(Int32(SOL_PACKET), 20 /* PACKET_QDISC_BYPASS */, &one, "PACKET_QDISC_BYPASS")
        return socket
    }

    static func open(family: Int32, type: Int32, protocol proto: Int32) throws(LinuxError) -> DatagramSocket {
        let fd = try SystemCall.call("socket", hint: { e in
            e == .permissionDenied || e == .notPermitted ? "raw sockets need root or CAP_NET_RAW" : nil
        }) { Glibc.socket(family, type | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), proto) }
        return DatagramSocket(fd: fd, isIPv6: family == AF_INET6)
    }

    func bind(_ address: IPAddress, port: UInt16, what: String) throws(LinuxError) {
        var sa = SocketAddress(address, port: port)
        try SystemCall.call("bind \(what) on \(address)", hint: { e in
            switch e {
            case .addressNotAvailable: "\(address) is not an address of this host; give --local an address configured on an interface here (ip -br addr)"
            case .addressInUse: "another program (a kernel vxlan device, another ferry) already uses it; stop it or choose another --dstport"
            case .permissionDenied: "ports below 1024 need root or CAP_NET_BIND_SERVICE"
            default: nil
            }
        }) {
            withUnsafePointer(to: &sa.storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, sa.length) }
            }
        }
    }

    func setOption(_ level: Int32, _ name: Int32, _ value: inout Int32, _ what: String) throws(LinuxError) {
        try SystemCall.call("setsockopt \(what)") {
            setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    /// Large socket buffers keep bursts from being dropped at the socket (wireguard-go uses
    /// 7 MiB). The FORCE options pass the sysctl limits as root; others fall back.
    public func setBufferSizes(_ bytes: Int) {
        var value = Int32(clamping: bytes)
        for (force, plain) in [(SO_RCVBUFFORCE, SO_RCVBUF), (SO_SNDBUFFORCE, SO_SNDBUF)] {
            if setsockopt(fd, SOL_SOCKET, force, &value, socklen_t(MemoryLayout<Int32>.size)) != 0 {
                _ = setsockopt(fd, SOL_SOCKET, plain, &value, socklen_t(MemoryLayout<Int32>.size))
            }
        }
    }

    /// Receives up to `batch.capacity` datagrams into the buffers set on the batch; returns the
    /// number received (also in `batch.count`), 0 when none is waiting.
    @inlinable
    public func receive(_ batch: MessageBatch) throws(LinuxError) -> Int {
        batch.prepareForReceive()
        let r = try SystemCall.nonBlocking("recvmmsg") {
            cferry_recvmmsg(fd, batch.headers, UInt32(batch.capacity), Int32(MSG_DONTWAIT), nil)
        }
        batch.count = Int(r.value ?? 0)
        return batch.count
    }

    /// Whether `errno` from a GSO send may mean the kernel will not take GSO messages here: EIO
    /// (the route's device cannot checksum), EINVAL (segments larger than the route's MTU allows;
    /// some IPv6 paths), EMSGSIZE.
    public static func refusesGSO(_ errno: Errno) -> Bool {
        errno == .ioError || errno == .invalidArgument || errno == .messageTooLong
    }

    /// Sends GSO message `i` of `batch` again as the datagrams it stands for, one send each
    /// (joined in `scratch`): for a kernel that refused the message whole. True when every one
    /// went.
    public func sendDatagrams(of batch: MessageBatch, message i: Int, scratch: UnsafeMutableRawBufferPointer) -> Bool {
        let (name, length) = batch.destinationName(i)
        var all = true, waits = 0
        batch.forEachDatagram(of: i, scratch: scratch) { datagram in
            // A full send buffer is waited for, a little, as `send` does.
            while true {
                let r = try? SystemCall.nonBlocking("sendto") {
                    Glibc.sendto(fd, datagram.baseAddress, datagram.count, 0, name?.assumingMemoryBound(to: sockaddr.self), length)
                }
                if case .wouldBlock? = r, waits < 20, Poller.wait(fd: fd, events: Int16(POLLOUT), milliseconds: 5) {
                    waits += 1
                    continue
                }
                if case .done? = r {} else { all = false }
                break
            }
        }
        return all
    }

    /// Sends the batch's messages and empties it; returns how many went. A message the kernel
    /// refuses (no route, too big) is skipped and reported to `failed` with its errno; when the
    /// socket buffer stays full after a short wait, the rest are reported with nil.
    @inlinable
    public func send(_ batch: MessageBatch, failed: (Int, Errno?) -> Void) -> Int {
        var sent = 0
        var next = 0
        var waits = 0
        while next < batch.count {
            let remaining = batch.count - next
            do {
                switch try SystemCall.nonBlocking("sendmmsg", {
                    cferry_sendmmsg(fd, batch.headers + next, UInt32(remaining), 0)
                }) {
                case .done(let n):
                    sent += Int(n)
                    next += Int(n)
                case .wouldBlock:
                    waits += 1
                    if waits > 20 || !Poller.wait(fd: fd, events: Int16(POLLOUT), milliseconds: 5) {
                        for i in next..<batch.count { failed(i, nil) }
                        next = batch.count
                    }
                }
            } catch {
                // sendmmsg reports an error only when the first message fails: skip that one.
                failed(next, error.errno)
                next += 1
            }
        }
        batch.count = 0
        return sent
    }
}
