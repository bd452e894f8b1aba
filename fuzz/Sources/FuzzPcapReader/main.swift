import FerryCapture
import FuzzSupport
#if canImport(Glibc)
import Glibc
#endif

// The pcap/pcapng file reader (libpcap underneath) on any file: the input is written to a
// file of this process's own (in /dev/shm: a disk's writeback made it 30 times slower), opened with and without `requireEthernet`, and read to the end.
// Holds: no trap, no access out of bounds (AddressSanitizer), no allocation over libFuzzer's
// limit (`-malloc_limit_mb` in tools/fuzz); every frame's bytes lie within what the file holds
// (no frame has more captured bytes than the file has bytes, and each is readable to its last
// byte); the frames read are at most as many as 16-byte record headers fit in the file; an
// error is a CaptureError with a message; nothing is read after `close()`.

let path = (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/ferry-fuzz-pcap-\(getpid()).pcap"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = input(data, size)
    guard size > 0 else { return 0 }
    let file = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    require(file >= 0, "cannot write \(path)")
    var written = 0
    while written < size {
        let n = write(file, bytes.baseAddress! + written, size - written)
        require(n > 0, "cannot write \(path)")
        written += n
    }
    close(file)
    for requireEthernet in [true, false] {
        do throws(CaptureError) {
            let reader = try PcapFileReader(path: path, requireEthernet: requireEthernet)
            var frames = 0
            while true {
                let frame: CapturedFrame?
                do throws(CaptureError) {
                    frame = try reader.next()
                } catch {
                    require(!"\(error)".isEmpty, "read error without a message")
                    break
                }
                guard let frame else { break }
                frames += 1
                require(frame.capturedLength <= size, "a frame of \(frame.capturedLength) bytes from a \(size)-byte file")
                require(frame.bytes.count == frame.capturedLength, "captured length and bytes differ")
                require(frames <= size / 16 + 1, "\(frames) frames from a \(size)-byte file")
                if frame.capturedLength > 0 {
                    // Touch every byte (AddressSanitizer sees a frame that overruns its buffer).
                    var sum = 0
                    for b in frame.bytes { sum &+= Int(b) }
                    require(sum >= 0, "")
                }
            }
            reader.close()
            require((try? reader.next()) == nil, "frames after close")
        } catch {
            require(!"\(error)".isEmpty, "open error without a message")
        }
    }
    return 0
}

@_cdecl("FuzzPcapReader_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    atexit { unlink(path) }
    return runFuzzer(argc, argv, fuzzOne)
}
