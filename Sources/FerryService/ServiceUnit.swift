/// The systemd unit `ferry service install` writes: one template, `ferry@.service`, whose
/// instance names a config file (`ferry@hostA` runs `ferry run --config /etc/ferry/hostA.yaml`).
///
/// Hardened to what Ferry needs and no more (each setting's reason beside it in the text):
/// root, but with a capability bounding set of CAP_NET_ADMIN (create the TAP, set its MTU and
/// offloads, put it on the bridge, socket buffers past the sysctl limits), CAP_NET_RAW (GRE's raw
/// IP socket, the link path's packet socket) and CAP_BPF (the TAP's flow-steering program with
/// several workers, since unprivileged BPF is off on Debian); a read-only file system but for
/// /run/ferry (control sockets) and /var/lib/ferry (captures); only /dev/net/tun among devices;
/// the five address families it opens; the system-service system calls less the privileged
/// ones, plus `bpf`. Checked against what `ferry run` calls by `LiveServiceTests`.
public struct ServiceUnit: Sendable, Equatable {
    /// The absolute path of the ferry binary ExecStart runs.
    public var binary: String
    /// Where instances' configs live: `<configDirectory>/<instance>.yaml`.
    public var configDirectory: String
    /// WatchdogSec: Ferry sends a keep-alive at half of it while its workers turn.
    public var watchdogSeconds: Int

    public static let templateName = "ferry@.service"
    public static let defaultConfigDirectory = "/etc/ferry"
    public static let unitDirectory = "/etc/systemd/system"

    public init(binary: String, configDirectory: String = ServiceUnit.defaultConfigDirectory, watchdogSeconds: Int = 30) {
        self.binary = binary
        self.configDirectory = configDirectory
        self.watchdogSeconds = watchdogSeconds
    }

    /// The capabilities every instance may use (the bounding set).
    public static let capabilities = ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF"]
    /// What an instance whose config names a `user:` needs more, to become that user after
    /// set-up (setresuid, setgroups, and cutting the bounding set down): a drop-in of its own.
    public static let userCapabilities = ["CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"]
    public static let addressFamilies = ["AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6", "AF_PACKET"]
    /// The system calls allowed, in order (an allow list, then a group taken out, then one put
    /// back): systemd's set for system services without its privileged calls, but `bpf`
    /// (loading the TAP's steering program).
    public static let systemCallFilter = ["@system-service", "~@privileged", "bpf"]
    /// Put back for an instance that becomes its `user:` (`Privileges.drop`).
    public static let userSystemCalls = ["@setuid", "capset"]

    /// The instance's name for `name`: the unit systemctl enables.
    public static func instance(_ name: String) -> String { "ferry@\(name).service" }

    /// `s` as one word of a unit's command line: `%` doubled (a specifier otherwise), quoted
    /// when it holds a blank.
    static func word(_ s: String) -> String {
        let escaped = s.replacingOccurrences(of: "%", with: "%%")
        guard escaped.contains(where: { $0 == " " || $0 == "\t" || $0 == "\"" || $0 == "\\" }) else { return escaped }
        return "\"" + escaped.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    public var text: String {
        """
        # Written by `ferry service install`; `ferry service uninstall` removes it.
        # One instance per config file: ferry@NAME runs with \(configDirectory)/NAME.yaml.
        [Unit]
        Description=Ferry overlay data plane (%i)
        # The underlay address (--local) must be there; Docker must find the bridge Ferry set up.
        Wants=network-online.target
        After=network-online.target
        Before=docker.service
        StartLimitIntervalSec=60
        StartLimitBurst=5

        [Service]
        # READY=1 once the TAP is on the bridge and every worker forwards, STOPPING=1 on the way
        # out, WATCHDOG=1 every WatchdogSec/2 while every worker turns.
        Type=notify
        NotifyAccess=main
        ExecStart=\(Self.word(binary)) run --config \(Self.word(configDirectory))/%i.yaml
        ExecReload=/bin/kill -HUP $MAINPID
        Restart=on-failure
        RestartSec=2s
        WatchdogSec=\(watchdogSeconds)s
        TimeoutStartSec=90s
        TimeoutStopSec=20s
        # Control sockets (/run/ferry/TAP.sock), shared by the instances; captures go under
        # /var/lib/ferry, the only other place the service may write.
        RuntimeDirectory=ferry
        RuntimeDirectoryPreserve=yes
        StateDirectory=ferry
        UMask=0077

        # Privileges: root's, cut down to what the data plane uses.
        CapabilityBoundingSet=\(Self.capabilities.joined(separator: " "))
        NoNewPrivileges=yes
        RestrictSUIDSGID=yes
        KeyringMode=private

        # Files and devices: a read-only system, no homes, no other devices than the TAP's.
        ProtectSystem=strict
        ProtectHome=yes
        PrivateTmp=yes
        PrivateMounts=yes
        DevicePolicy=closed
        DeviceAllow=/dev/net/tun rw
        # Ferry writes no sysctl and no /sys file (its set-up is rtnetlink), and loads no module
        # itself (the kernel loads tun and bridge on demand).
        ProtectKernelTunables=yes
        ProtectKernelModules=yes
        ProtectKernelLogs=yes
        ProtectControlGroups=yes
        ProtectClock=yes
        ProtectHostname=yes
        ProtectProc=invisible
        ProcSubset=pid

        # Kernel interfaces: the sockets it opens, native system calls of a system service.
        RestrictAddressFamilies=\(Self.addressFamilies.joined(separator: " "))
        RestrictNamespaces=yes
        RestrictRealtime=yes
        LockPersonality=yes
        MemoryDenyWriteExecute=yes
        SystemCallArchitectures=native
        # The system-service set without @privileged, but for bpf (the TAP's steering program).
        \(Self.systemCallFilter.map { "SystemCallFilter=\($0)" }.joined(separator: "\n"))
        SystemCallErrorNumber=EPERM

        [Install]
        WantedBy=multi-user.target

        """
    }

    /// The drop-in (`ferry@NAME.service.d/user.conf`) for an instance whose config has
    /// `user:`: Ferry becomes that user after set-up, which takes these capabilities.
    public static var userDropIn: String {
        """
        # Written by `ferry service install`: this instance's config names a user (`user:`),
        # which Ferry becomes once set-up is done, keeping no capability (or CAP_NET_ADMIN with
        # GRE's link path). Becoming it takes these capabilities and system calls.
        [Service]
        CapabilityBoundingSet=\(userCapabilities.joined(separator: " "))
        SystemCallFilter=\(userSystemCalls.joined(separator: " "))

        """
    }

    /// What to put in /etc/rc.local on a host without systemd, as the seed made its set-up
    /// last: start Ferry in the background at boot, its log in /var/log.
    public func rcLocalLines(name: String) -> String {
        """
        # Ferry \(name): start at boot (before `exit 0`)
        mkdir -p /run/ferry
        \(binary) run --config \(configDirectory)/\(name).yaml >>/var/log/ferry-\(name).log 2>&1 &
        """
    }
}
