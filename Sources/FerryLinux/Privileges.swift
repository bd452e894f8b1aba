import CCap
import CFerryLinux
import Glibc
import SystemPackage

/// A user of this host to run as: its ids and its groups, read from the user database.
public struct UserAccount: Sendable, Equatable {
    public let name: String
    public let uid: uid_t
    public let gid: gid_t
    /// Every group it belongs to, its primary group among them.
    public let groups: [gid_t]

    public init(name: String, uid: uid_t, gid: gid_t, groups: [gid_t]) {
        self.name = name
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }

    /// The user called `name` (getpwnam_r, getgrouplist); nil when there is none.
    public static func named(_ name: String) -> UserAccount? {
        var entry = passwd()
        var found: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getpwnam_r(name, &entry, &buffer, buffer.count, &found) == 0, found != nil else { return nil }
        let uid = entry.pw_uid, gid = entry.pw_gid
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(name, gid, &groups, &count) < 0 {
            groups = [gid_t](repeating: 0, count: Int(count))
            _ = getgrouplist(name, gid, &groups, &count)
        }
        return UserAccount(name: name, uid: uid, gid: gid, groups: Array(groups.prefix(Int(max(count, 0)))))
    }
}

/// The capabilities Ferry may keep after set-up.
public enum Capability: Int32, Sendable, CaseIterable, Comparable, CustomStringConvertible {
    /// rtnetlink requests that change something (the link path's neighbour re-probe), device
    /// settings (MTU, offloads).
    case netAdmin = 12
    /// Opening raw and packet sockets.
    case netRaw = 13

    public var description: String {
        switch self {
        case .netAdmin: "cap_net_admin"
        case .netRaw: "cap_net_raw"
        }
    }

    /// The bit of this capability in a `/proc/PID/status` mask (CapEff, CapBnd, …).
    public var mask: UInt64 { 1 << UInt64(rawValue) }

    public static func < (a: Capability, b: Capability) -> Bool { a.rawValue < b.rawValue }
}

/// Giving up root once set-up is done.
public enum Privileges {
    /// Becomes `user` (its uid, gid and groups) with only `kept` of root's capabilities, and
    /// with no way back: the capability bounding set is cut down to `kept`, and no exec may
    /// gain privileges (PR_SET_NO_NEW_PRIVS). Capabilities belong to threads: call it while the
    /// process has one thread, so that every thread made afterwards inherits the result; it
    /// refuses to run with more. Throws, changing what it had changed so far, on any failure.
    public static func drop(to user: UserAccount, keeping kept: Set<Capability>) throws(LinuxError) {
        if let threads = status("Threads:").flatMap({ Int($0) }), threads > 1 {
            throw LinuxError("drop privileges", errno: .resourceBusy,
                             hint: "\(threads) threads already run; privileges must be dropped before any other thread starts")
        }
        try SystemCall.call("prctl PR_SET_NO_NEW_PRIVS") { cferry_set_no_new_privs() }
        // The bounding set: only what is kept may ever come back (cutting it needs CAP_SETPCAP,
        // which root has until the uid changes).
        for bit in 0...Int32(cap_max_bits() - 1) where !kept.contains(where: { $0.rawValue == bit }) {
            try SystemCall.call("drop capability \(bit) from the bounding set") { cap_drop_bound(cap_value_t(bit)) }
        }
        try SystemCall.call("prctl PR_SET_KEEPCAPS") { cferry_set_keep_capabilities(1) }
        try SystemCall.call("setgroups for \(user.name)") { setgroups(user.groups.count, user.groups) }
        try SystemCall.call("setresgid \(user.gid)") { cferry_set_group_ids(user.gid) }
        try SystemCall.call("setresuid \(user.uid) (\(user.name))") { cferry_set_user_ids(user.uid) }
        try SystemCall.call("prctl PR_SET_KEEPCAPS off") { cferry_set_keep_capabilities(0) }
        // Permitted and effective: exactly `kept` (the uid change left the permitted set whole).
        guard let caps = cap_init() else { throw LinuxError("cap_init", errno: Errno(rawValue: Glibc.errno)) }
        defer { cap_free(UnsafeMutableRawPointer(caps)) }
        var values = kept.sorted().map { cap_value_t($0.rawValue) }
        if !values.isEmpty {
            for flag in [CAP_PERMITTED, CAP_EFFECTIVE] {
                try SystemCall.call("cap_set_flag") { cap_set_flag(caps, flag, Int32(values.count), &values, CAP_SET) }
            }
        }
        try SystemCall.call("cap_set_proc") { cap_set_proc(caps) }
        // Root cannot come back: with the saved uid changed too, setuid(0) must fail.
        if setuid(0) == 0 { throw LinuxError("drop privileges", errno: .permissionDenied, hint: "setuid(0) still succeeds") }
    }

    /// Removes the Unix socket at `path` when this process ends, however it ends, through a
    /// small child that keeps the right to write the socket's directory (its uid's ownership of
    /// it, with no capability) after this process has given it up. Returns the child's pid.
    @discardableResult
    public static func removeWhenDone(socketAt path: String) throws(LinuxError) -> pid_t {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let dir = try SystemCall.call("open \(directory)") { cferry_open_directory_path(directory) }
        defer { close(dir) }
        return try SystemCall.call("start the remover of \(path)") { cferry_spawn_socket_remover(dir, name) }
    }

    /// Asks for `signal` when the parent process ends (a child that must not outlive it).
    public static func endWithParent(signal: Int32 = SIGTERM) throws(LinuxError) {
        try SystemCall.call("prctl PR_SET_PDEATHSIG") { cferry_set_parent_death_signal(signal) }
    }

    /// This process's user and capabilities as `/proc/self/status` tells them (for the log).
    public static func current() -> (uid: uid_t, effective: UInt64, bounding: UInt64) {
        (geteuid(), status("CapEff:").flatMap { UInt64($0, radix: 16) } ?? 0, status("CapBnd:").flatMap { UInt64($0, radix: 16) } ?? 0)
    }

    /// The value of the line of `/proc/self/status` that starts with `key`, blanks trimmed.
    static func status(_ key: String) -> String? {
        guard let fd = try? FileDescriptor.open("/proc/self/status", .readOnly) else { return nil }
        defer { try? fd.close() }
        var bytes = [UInt8](repeating: 0, count: 16384)
        let n = (try? bytes.withUnsafeMutableBytes { try fd.read(into: $0) }) ?? 0
        let text = String(decoding: bytes.prefix(n), as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key) }) else { return nil }
        return String(line.dropFirst(key.count).filter { $0 != " " && $0 != "\t" })
    }
}
