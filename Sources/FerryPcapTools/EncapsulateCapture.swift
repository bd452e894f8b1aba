import FerryCapture
import FerryWire

/// What `encapsulateCapture` did with a capture.
public struct EncapsulationReport: Codable, Sendable, Equatable {
    /// Outer frames written.
    public internal(set) var written = 0
    /// Frames that did not match the filter.
    public internal(set) var filteredOut = 0
    /// Frames shorter than an Ethernet header, skipped.
    public internal(set) var tooShort = 0
    /// Frames larger than one outer IP packet carries (`TunnelOptions.maximumInnerFrameLength`),
    /// skipped.
    public internal(set) var tooLarge = 0
    /// The bytes of the frames written, before and after encapsulation.
    public internal(set) var innerBytes = 0
    public internal(set) var outerBytes = 0

    public init() {}
}

/// Reads `input`, writes each frame that matches `filter` (all without one) encapsulated as
/// `options` say to `output`, as full outer Ethernet frames, timestamps kept. The output is not
/// created if the input cannot be opened.
public func encapsulateCapture(input: String, output: String, options: TunnelOptions,
                               filter: PacketFilter? = nil) throws(CaptureError) -> EncapsulationReport {
    let template = EncapsulationTemplate(options)
    let reader = try PcapFileReader(path: input)
    let writer = try PcapFileWriter(path: output)

    // One buffer with headroom: each frame is copied in once and the outer header written in
    // front of it, as the live path does.
    let headroom = options.fullHeaderLength
    // Sized by the tunnel, not by the file's snapshot length (a header field: it may say
    // anything): only frames up to the tunnel's largest inner frame are copied in.
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: headroom + options.maximumInnerFrameLength, alignment: 16)
    defer { buffer.deallocate() }

    var report = EncapsulationReport()
    while let frame = try reader.next() {
        if let filter, !filter.matches(frame) { report.filteredOut += 1; continue }
        guard frame.bytes.count >= Ethernet.headerLength else { report.tooShort += 1; continue }
        guard frame.bytes.count <= options.maximumInnerFrameLength else { report.tooLarge += 1; continue }
        UnsafeMutableRawBufferPointer(rebasing: buffer[headroom..<(headroom + frame.bytes.count)]).copyMemory(from: frame.bytes)
        let start = template.encapsulateFrame(in: buffer, innerOffset: headroom, innerLength: frame.bytes.count)
        let outer = UnsafeRawBufferPointer(rebasing: buffer[start..<(headroom + frame.bytes.count)])
        writer.write(outer, timestamp: frame.timestamp)
        report.written += 1
        report.innerBytes += frame.bytes.count
        report.outerBytes += outer.count
    }
    try writer.close()
    return report
}
