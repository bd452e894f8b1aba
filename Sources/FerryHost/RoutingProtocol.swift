/// The rtm_protocol value on every route Ferry installs, so that Ferry (and `ip route show proto
/// 245`) can tell its routes from those a user or another daemon made: the kernel deletes a route
/// only when the protocol given matches, so Ferry's deletes never take a hand-made route to the
/// same subnet. 245 is in neither iproute2's `rt_protos` (0-4 and 8-18 for the kernel and the
/// classic daemons, 42 babel, 99 openr, 186-192 bgp/isis/ospf/rip/eigrp) nor the kernel's
/// RTPROT_* list, nor the values other network daemons are known to use (Calico's 80).
/// `echo "245 ferry" > /etc/iproute2/rt_protos.d/ferry.conf` makes `ip route` print its name.
public enum RoutingProtocol {
    public static let ferry: UInt8 = 245
}
