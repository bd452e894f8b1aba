import FerryLinux
import FerryWire
import Logging

// The underlay MTU followed while Ferry runs: read at start from the interface holding the
// local address (unless --underlay-mtu gave it), and again every second, so that an
// interface whose MTU is lowered (or raised) under a running Ferry changes what the workers
// carry whole and what their ICMP "too big" replies announce.
//
// The TAP's MTU is left as it is, even when Ferry derived it from the underlay at start: the
// TAP is a bridge port, and a bridge drops a frame larger than a port's MTU without a word,
// while Ferry answers it with ICMP "fragmentation needed" / "packet too big" carrying the new
// MTU, so the senders' PMTU discovery adapts. (A raised underlay MTU is used up to what the
// TAP hands over; a restart derives the TAP's MTU afresh.)
extension Engine {
    /// Reads the underlay's MTU; when it changed, publishes it to the workers and logs it once.
    /// A reading that fails (the address moving between interfaces) changes nothing.
    func followUnderlayMTU() {
        guard let name = NetworkInterface.holding(configuration.local), let mtu = try? NetworkInterface(name).mtu() else { return }
        let mtuInUse = state.underlayMTU
        guard mtuInUse.lastRead.exchange(mtu, ordering: .relaxed) != mtu else { return }
        guard UnderlayMTU.followed.contains(mtu) else {
            logger.warning("""
                the underlay MTU of \(name) is now \(mtu), outside \(UnderlayMTU.followed.lowerBound)-\(UnderlayMTU.followed.upperBound): \
                keeping \(mtuInUse.load())
                """)
            return
        }
        guard let old = mtuInUse.publish(mtu) else { return }
        let inner = Worker<TAPDevice, SocketTransport>.maximumInnerFrame(underlayMTU: mtu, ipOverhead: configuration.ipOverhead)
        logger.notice("""
            the underlay MTU of \(name) changed from \(old) to \(mtu): inner frames of up to \(inner) bytes cross whole, \
            larger ones are answered with ICMP too-big (mtu \(inner - Ethernet.headerLength)); the TAP's MTU stays \(tapMTU)
            """)
    }
}
