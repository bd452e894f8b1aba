import CPcap

/// A tcpdump-syntax filter ("udp port 4789", "proto gre and host 10.200.0.2"), compiled once by
/// libpcap into BPF and run over frames in userspace.
///
/// `Sendable` although it holds a pointer: the program is written only in `init` and freed only
/// in `deinit`; `matches` just reads it (libpcap's BPF interpreter keeps its state on the stack),
/// so worker threads may share one filter.
public final class PacketFilter: @unchecked Sendable {
    /// The expression as given.
    public let expression: String
    /// The link type the filter was compiled for; frames of another type give nonsense answers.
    public let linkType: LinkType

    private let program: UnsafeMutablePointer<bpf_program>

    /// Compiles `expression` for frames of `linkType` captured with `snapshotLength`.
    ///
    /// An empty expression matches every frame, as in tcpdump. Throws `.badFilter` with libpcap's
    /// reason if the expression does not compile.
    public init(expression: String, linkType: LinkType = .ethernet, snapshotLength: Int = 262_144) throws(CaptureError) {
        guard let handle = pcap_open_dead(linkType.rawValue, Int32(clamping: snapshotLength)) else {
            throw .badFilter(expression: expression, reason: "libpcap could not allocate a handle")
        }
        defer { pcap_close(handle) }
        let program = UnsafeMutablePointer<bpf_program>.allocate(capacity: 1)
        program.initialize(to: bpf_program())
        do {
            try FilterCompiler.compile(expression, for: handle, into: program)
        } catch {
            program.deallocate()
            throw error
        }
        self.expression = expression
        self.linkType = linkType
        self.program = program
    }

    deinit {
        pcap_freecode(program)
        program.deallocate()
    }

    /// Whether the frame in `bytes` passes the filter. `originalLength` is its length on the
    /// wire if the bytes are a truncated capture (it is what `greater`/`less` test); it defaults
    /// to `bytes.count`. Does not allocate.
    public func matches(_ bytes: UnsafeRawBufferPointer, originalLength: Int? = nil) -> Bool {
        var header = pcap_pkthdr()
        header.caplen = bpf_u_int32(truncatingIfNeeded: bytes.count)
        header.len = bpf_u_int32(clamping: max(originalLength ?? bytes.count, bytes.count))
        if let base = bytes.baseAddress {
            return pcap_offline_filter(program, &header, base.assumingMemoryBound(to: UInt8.self)) != 0
        }
        // An empty frame still needs a valid pointer; the program reads nothing past caplen.
        var none: UInt8 = 0
        return pcap_offline_filter(program, &header, &none) != 0
    }

    /// Whether a captured frame passes the filter, judged on its original length.
    public func matches(_ frame: CapturedFrame) -> Bool {
        matches(frame.bytes, originalLength: frame.originalLength)
    }

    /// Whether an owned frame passes the filter, judged on its original length.
    public func matches(_ frame: OwnedFrame) -> Bool {
        frame.bytes.withUnsafeBytes { matches($0, originalLength: frame.originalLength) }
    }
}
