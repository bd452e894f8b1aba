import FerryWire

/// `--etcd URL[,URL…]`, `--etcd-prefix` and `--etcd-ttl` (or `etcd:`, `etcd-prefix:`,
/// `etcd-ttl:` in the config file): membership from etcd. Read before the rest of the
/// settings, since what etcd holds (the tunnel, the subnet, the peers) fills them in.
public struct EtcdSettings: Sendable, Equatable {
    public static let defaultPrefix = "/ferry/network"
    public static let defaultTTL = 30

    /// The endpoints as given (comma-separated URLs).
    public var endpoints: String
    public var prefix: String
    /// The TTL of the host's lease, in seconds; renewed at a third of it.
    public var ttl: Int
    /// This host's underlay address (`--local`), which names its key.
    public var local: IPAddress
    /// A subnet given by hand (`--subnet`): registered as is, none taken from the range.
    public var subnet: InterfaceAddress?
    /// Where the subnet held is written for Docker (`--subnet-file`, default /run/ferry/subnet.env).
    public var subnetFile: String
    /// Whether the tunnel was given here (`--encap`, `--vni` or `--key`); if not, it comes from etcd.
    public var tunnelGiven: Bool
    /// How to reach etcd beyond its URLs: TLS files and a user (`--etcd-ca`, `--etcd-cert`,
    /// `--etcd-key`, `--etcd-user`, `--etcd-password-file`).
    public var access: EtcdAccess
    /// Whether the run gives its privileges up (`--user`): it then joins in a child process.
    public var runsAsUser: Bool

    /// nil when no `--etcd` (nor `etcd:`) was given.
    public init?(options o: RunOptions, file: ConfigFile?) throws(SettingsError) {
        let v = Values(options: o, file: file)
        let access = EtcdAccess(caFile: v.value(o.etcdCA, "etcd-ca"), certificateFile: v.value(o.etcdCert, "etcd-cert"),
                                keyFile: v.value(o.etcdKey, "etcd-key"), user: v.value(o.etcdUser, "etcd-user"),
                                passwordFile: v.value(o.etcdPasswordFile, "etcd-password-file"))
        guard let endpoints = v.value(o.etcd, "etcd") else {
            if v.value(o.etcdPrefix, "etcd-prefix") != nil || v.value(o.etcdTtl, "etcd-ttl") != nil || access != EtcdAccess() {
                throw SettingsError("""
                    --etcd-prefix, --etcd-ttl and the etcd TLS and user options go with --etcd URL (the etcd to keep \
                    membership in); give --etcd too
                    """)
            }
            return nil
        }
        self.access = access
        // Ferry gives privileges up only while it is the one thread (Privileges.drop), and the
        // etcd client starts threads: with --user the join runs in a child process.
        // The user checked now, not after a join that may wait for etcd: a usage error at once.
        runsAsUser = try v.value(o.user, "user").map(RunSettings.account) != nil
        self.endpoints = endpoints
        subnetFile = v.value(o.subnetFile, "subnet-file") ?? "/run/ferry/subnet.env"
        prefix = v.value(o.etcdPrefix, "etcd-prefix") ?? Self.defaultPrefix
        guard prefix.hasPrefix("/") else {
            throw SettingsError("--etcd-prefix '\(prefix)' must start with / (e.g. \(Self.defaultPrefix))")
        }
        ttl = try v.value(o.etcdTtl, "etcd-ttl").map { (t) throws(SettingsError) in try Parse.integer(t, "etcd lease TTL", in: 2...3600) }
            ?? Self.defaultTTL
        guard let localText = v.value(o.local, "local") else {
            throw SettingsError("give this host's underlay address with --local IP (it names this host in etcd)")
        }
        local = try Parse.address(localText)
        subnet = try v.value(o.subnet, "subnet").map(Parse.interfaceAddress)
        if !o.peer.isEmpty || file?["peer"] != nil {
            throw SettingsError("with --etcd the peers are the hosts in etcd: leave out --peer (and `peer:`)")
        }
        tunnelGiven = v.value(o.encap, "encap") != nil || v.value(o.vni, "vni") != nil || v.value(o.key, "key") != nil
    }
}

/// What reaching etcd takes beyond its URLs: TLS files (a CA; a client certificate with its key)
/// and a user whose password is read from a file. Checked for consistency by the client
/// (`EtcdClient.Configuration.validate`), which says what is missing.
public struct EtcdAccess: Sendable, Equatable {
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?
    public var user: String?
    public var passwordFile: String?

    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, user: String? = nil,
                passwordFile: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.user = user
        self.passwordFile = passwordFile
    }
}
