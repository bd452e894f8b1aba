import CPcap
import Foundation

/// Calls a libpcap function that reports failure by writing into a caller-supplied error buffer,
/// and returns its result together with that message (empty if libpcap wrote none).
func withPcapErrorBuffer<Result>(
    _ body: (UnsafeMutablePointer<CChar>) -> Result
) -> (result: Result, message: String) {
    withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(PCAP_ERRBUF_SIZE)) { buffer in
        let base = buffer.baseAddress!
        base.initialize(repeating: 0, count: buffer.count)
        let result = body(base)
        base[buffer.count - 1] = 0
        return (result, String(cString: base))
    }
}

/// libpcap's last error message for a handle.
func pcapError(_ handle: OpaquePointer) -> String {
    String(cString: pcap_geterr(handle))
}

/// Compiles tcpdump-syntax filters.
///
/// Before libpcap 1.8 `pcap_compile` used a non-reentrant parser with global state, and Ferry
/// may be linked against such a library elsewhere; one process-wide lock makes every compile
/// safe whatever the version. Compiling is rare (start-up, a control command), so the lock costs
/// nothing that matters.
enum FilterCompiler {
    private static let lock = NSLock()

    /// Compiles `expression` for `handle`'s link type and snapshot length into `program`, which
    /// the caller must release with `pcap_freecode` once it is no longer used.
    static func compile(
        _ expression: String, for handle: OpaquePointer, into program: UnsafeMutablePointer<bpf_program>
    ) throws(CaptureError) {
        // The netmask only matters for "ip broadcast", which Ferry's filters have no use for.
        let status = lock.withLock {
            pcap_compile(handle, program, expression, 1, bpf_u_int32(PCAP_NETMASK_UNKNOWN))
        }
        guard status == 0 else {
            let reason = pcapError(handle)
            throw .badFilter(expression: expression, reason: reason.isEmpty ? "rejected by libpcap" : reason)
        }
    }
}

/// The text for the current `errno`, for failures libpcap reports only through stdio.
func systemErrorText() -> String {
    String(cString: strerror(errno))
}
