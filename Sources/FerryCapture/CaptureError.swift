/// Everything that can go wrong while reading, writing or filtering packets.
///
/// Each case carries what a person needs to act on it (the path, the filter text
/// and libpcap's own reason), and `description` is one line that says what is wrong and how to
/// fix it, so a command-line tool can print it as it is.
public enum CaptureError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The capture file to read does not exist.
    case fileNotFound(path: String)
    /// The file exists but libpcap cannot read it as pcap or pcapng (`reason` is libpcap's).
    case cannotOpen(path: String, reason: String)
    /// The capture's link type is not Ethernet and the caller needs Ethernet frames.
    case notEthernet(path: String, linkType: String)
    /// libpcap rejected a tcpdump-syntax filter expression (`reason` is libpcap's).
    case badFilter(expression: String, reason: String)
    /// Reading packets failed after the source was opened: a truncated file, say.
    case read(source: String, reason: String)
    /// A capture file could not be created or written.
    case write(path: String, reason: String)
    /// The capture file's path is a symbolic link, which is never followed: a link planted
    /// where a capture is written would send container traffic wherever it points.
    case symbolicLink(path: String)

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "\(path): no such capture file; check the path (record one with `tcpdump -i <iface> -w FILE`)"
        case .cannotOpen(let path, let reason):
            return "\(path): not a readable pcap or pcapng capture (\(reason)); give a file written by tcpdump, tshark or ferry"
        case .notEthernet(let path, let linkType):
            return "\(path): link type \(linkType) is not Ethernet; capture with `tcpdump -i <iface>` on an Ethernet interface, not `-i any`"
        case .badFilter(let expression, let reason):
            return "bad capture filter \"\(expression)\": \(reason); use tcpdump filter syntax, e.g. \"udp port 4789\" (see pcap-filter(7))"
        case .read(let source, let reason):
            return "error reading packets from \(source): \(reason); the frames before it are good, the rest are lost (the file may be cut short: check it with `capinfos`)"
        case .write(let path, let reason):
            return "cannot write capture file \(path): \(reason); check that the directory exists and is writable and that the disk is not full"
        case .symbolicLink(let path):
            return "\(path) is a symbolic link, which a capture never follows; remove it or give the path of the file itself"
        }
    }
}
