/// What `ferry run`'s command line gave: one field a flag, nil (or empty, or false) when the
/// flag was not given, so that the config file's value, then the default, applies.
public struct RunOptions: Sendable {
    public var config: String?
    public var tap: String?
    public var bridge: String?
    public var persistent = false
    public var encap: String?
    public var vni: String?
    public var key: String?
    public var local: String?
    public var peer: [String] = []
    public var acceptAnyPeer = false
    public var acceptCidr: [String] = []
    public var maxMacsPerPeer: String?
    public var dstport: String?
    public var srcPortRange: String?
    public var ttl: String?
    public var tos: String?
    public var df: String?
    public var udpCsum: Bool?
    public var greCsum = false
    public var greSeq = false
    public var grePath: String?
    public var mtu: String?
    public var offloads: String?
    public var workers: String?
    public var underlayMtu: String?
    public var ageing: String?
    public var fdbSize: String?
    public var staticFdb: [String] = []
    public var control: String?
    public var capture: String?
    public var capturePoint: String?
    public var captureFilter: String?
    public var batch: String?
    public var statsInterval: String?
    public var logLevel: String?
    public var user: String?
    public var subnet: String?
    public var mode: String?
    public var setup = false
    public var metrics: String?
    public var etcd: String?
    public var etcdPrefix: String?
    public var etcdTtl: String?
    public var subnetFile: String?
    /// etcd over TLS (a CA, a client certificate and its key) and with authentication (a user,
    /// and a file holding the password: never the password itself on a command line).
    public var etcdCA: String?
    public var etcdCert: String?
    public var etcdKey: String?
    public var etcdUser: String?
    public var etcdPasswordFile: String?

    public init() {}
}
