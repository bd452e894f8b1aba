/// What one check found: whether the host is fine for it, what is wrong, and how to fix it.
public struct Finding: Codable, Equatable, Sendable {
    public enum Status: String, Codable, Sendable {
        case ok
        case problem
        /// The check could not run (a tool or a privilege missing, nothing to check); `detail`
        /// says why. Never a silent pass.
        case skipped
    }

    /// The check's name: `mtu`, `rp_filter`, `ip_forward`, `br_netfilter`, `firewall`, `peers`,
    /// `duplicate_address`, `vxlan_checksum_offload`.
    public var name: String
    public var status: Status
    /// What was seen, with the numbers and names that make it checkable by hand.
    public var detail: String
    /// For a problem: the exact commands or settings that fix it. Nil otherwise.
    public var fix: String?

    public init(name: String, status: Status, detail: String, fix: String? = nil) {
        self.name = name
        self.status = status
        self.detail = detail
        self.fix = fix
    }

    public static func ok(_ name: String, _ detail: String) -> Finding { Finding(name: name, status: .ok, detail: detail) }
    public static func skipped(_ name: String, _ detail: String) -> Finding { Finding(name: name, status: .skipped, detail: detail) }
    public static func problem(_ name: String, _ detail: String, fix: String) -> Finding {
        Finding(name: name, status: .problem, detail: detail, fix: fix)
    }
}

/// Every check's finding, in a fixed order.
public struct DoctorReport: Codable, Equatable, Sendable {
    public var checks: [Finding]

    public init(checks: [Finding]) { self.checks = checks }

    public var problems: [Finding] { checks.filter { $0.status == .problem } }
    /// 0 when nothing is wrong, 1 when something is (what `ferry doctor` exits with).
    public var exitCode: Int32 { problems.isEmpty ? 0 : 1 }

    public func finding(_ name: String) -> Finding? { checks.first { $0.name == name } }
}
