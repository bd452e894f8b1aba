import FerryLinux

extension Engine {
    /// The capabilities a running engine still needs once set-up is done, with the reason for
    /// each: every socket, the TAP and its queues are open by then, and sockets keep working
    /// without the capability that opened them.
    ///
    /// - `CAP_NET_ADMIN` with GRE's link path: the next-hop thread has the kernel re-probe a
    ///   neighbour that link-path packets do not confirm (RTM_NEWNEIGH with NTF_USE, which
    ///   rtnetlink allows only with CAP_NET_ADMIN). Route and neighbour reads need nothing.
    ///
    /// Nothing else: no socket is opened again after start (so no CAP_NET_RAW), and the TAP's
    /// MTU and offloads are set once, at start.
    public var capabilitiesAfterStart: Set<Capability> {
        workers[0].transport.hasLinkSender ? [.netAdmin] : []
    }
}
