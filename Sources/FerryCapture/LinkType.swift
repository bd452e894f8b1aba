import CPcap

/// A libpcap data-link type (a `DLT_*` value): what the bytes of every frame in a capture start with.
///
/// Ferry's frames are Ethernet, so `.ethernet` is the one that matters; the others are named so
/// that a capture of the wrong kind (say `tcpdump -i any`, which records `LINUX_SLL`) can be
/// recognised and reported by name.
public struct LinkType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The `DLT_*` value as libpcap's API uses it (not the `LINKTYPE_*` value stored in files).
    public let rawValue: Int32

    public init(rawValue: Int32) {
        self.rawValue = rawValue
    }

    /// Looks a type up by libpcap's name for it, case-insensitively (`"EN10MB"`, `"LINUX_SLL"`,
    /// `"RAW"`); nil if libpcap does not know the name.
    public init?(name: String) {
        let value = pcap_datalink_name_to_val(name)
        guard value >= 0 else { return nil }
        self.rawValue = value
    }

    /// Ethernet II / 802.3 frames, `DLT_EN10MB`.
    public static let ethernet = LinkType(rawValue: DLT_EN10MB)
    /// Raw IPv4 or IPv6 packets with no link-layer header, `DLT_RAW`.
    public static let rawIP = LinkType(rawValue: DLT_RAW)
    /// Linux "cooked" capture v1, what `tcpdump -i any` records on older tcpdumps, `DLT_LINUX_SLL`.
    public static let linuxCooked = LinkType(rawValue: DLT_LINUX_SLL)
    /// Linux "cooked" capture v2, what `tcpdump -i any` records on newer tcpdumps, `DLT_LINUX_SLL2`.
    public static let linuxCooked2 = LinkType(rawValue: DLT_LINUX_SLL2)

    /// libpcap's short name (`EN10MB`, `LINUX_SLL`, …), or `DLT <n>` for a value it does not know.
    public var name: String {
        guard let cName = pcap_datalink_val_to_name(rawValue) else { return "DLT \(rawValue)" }
        return String(cString: cName)
    }

    /// libpcap's longer human description (`Ethernet`, `Linux cooked v1`, …), or `name` if none.
    public var summary: String {
        guard let cText = pcap_datalink_val_to_description(rawValue) else { return name }
        return String(cString: cText)
    }

    public var description: String { name }
}
