import FerryCapture
import FerryLab
import Foundation
import Testing

extension LiveLabTests.LiveCaptureTests {
    /// Pings and a bulk transfer from h0's container to h1's while h0's Ferry captures both
    /// sides into `capture`: what each ping did, the transfer, and h0's counters before it
    /// stopped, and how long it took to stop. `started` runs once h0's Ferry answers.
    func trafficWhileCapturing(_ live: LiveLab, capture: String, tag: String, started: () -> Void = {}) throws
        -> (pings: PingResult, transfer: TransferResult, stats: CtlStats, exitSeconds: Double, status: Int32) {
        let (h0, h1) = (live.host(0), live.host(1))
        let (a, b) = (h0.containers[0], h1.containers[0])
        let tunnel = ["--vni", "42"]
        let ferry = try live.startFerry(on: 0, tunnel: tunnel, extra: ["--capture", capture, "--capture-point", "both"])
        started()
        try live.startFerry(on: 1, tunnel: tunnel)
        let log = "ping-\(tag).log"
        let ping = try live.spawn(a.namespace, ["ping", "-n", "-c", "150", "-i", "0.05", "-W", "2", b.address], log: log)
        // 24 MiB each way of the capture (inner and outer) while the pings cross.
        let transfer = try live.transfer(bytes: 24 << 20, from: a.namespace, to: b.namespace, address: b.address, port: 5201)
        _ = Lab.waitUntil(timeout: 30) { !ping.isRunning }
        let pings = PingResult(output: (try? String(contentsOfFile: live.file(log), encoding: .utf8)) ?? "")
        let stats = try live.stats(0)
        let stopping = Date()
        live.stopFerry(on: 0)
        return (pings, transfer, stats, Date().timeIntervalSince(stopping), ferry.terminationStatus)
    }

    func occurrences(of text: String, in log: String) -> Int {
        log.components(separatedBy: text).count - 1
    }

    /// A capture into a 1 MiB tmpfs: the disk fills within the first second, and forwarding
    /// goes on untouched; the records lost are counted, said once in the log, and the file
    /// ends on a whole record.
    @Test func aFullDiskLosesCaptureRecordsNotPackets() throws {
        let live = try LiveLab(tag: "capfull", withoutIPv6: true)
        defer { live.teardown() }
        try live.build()
        let mount = live.file("tmpfs")
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        let mounted = try Lab.capture(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount], timeout: 10)
        try #require(mounted.status == 0, "mount tmpfs: \(mounted.stderr)")
        defer { _ = try? Lab.capture(["umount", "-l", mount], timeout: 10) }
        let path = mount + "/capture.pcap"

        let run = try trafficWhileCapturing(live, capture: path, tag: "full")
        #expect(run.pings.transmitted == 150 && run.pings.received == 150, "\(run.pings)")
        #expect(run.transfer.sentSHA256 == run.transfer.receivedSHA256, "\(run.transfer)")
        let failed = try run.stats.counter("capture_write_failed")
        #expect(failed > 0, "\(run.stats)")
        #expect(run.status == 0, "ferry exit status \(run.status): \(live.logTail(0))")

        let log = (try? String(contentsOfFile: live.ferryLog(0), encoding: .utf8)) ?? ""
        #expect(occurrences(of: "capture: writing to \(path) failed (No space left on device)", in: log) == 1,
                "the failure is logged once: \(live.logTail(0))")
        #expect(log.contains("capture to \(path) closed:"), "the totals at exit: \(live.logTail(0))")

        // The file is what fitted, cut back to its last whole record: every tool reads it to the end.
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0
        let frames = try PcapFileReader(path: path).readAll()
        #expect(size <= 1 << 20 && frames.count > 10, "\(size) bytes, \(frames.count) frames")
        let tshark = try Lab.capture([try Tools.system("tshark"), "-n", "-r", path, "-T", "fields", "-e", "frame.number"], timeout: 60)
        #expect(tshark.status == 0 && tshark.stdout.split(separator: "\n").count == frames.count,
                "tshark on the full disk's capture: exit \(tshark.status), \(tshark.stderr)")
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        print("[live capture full disk] pings \(run.pings.received)/\(run.pings.transmitted); \(run.transfer); "
              + "capture_write_failed \(failed), capture_dropped \(try run.stats.counter("capture_dropped")); file \(size) bytes, "
              + "\(frames.count) frames; ferry stopped in \(String(format: "%.2f", run.exitSeconds)) s")
    }

    /// A capture into a FIFO whose reader is stopped (SIGSTOP): the writer waits on it, the
    /// rings fill and drop, and forwarding goes on; the end of the run does not wait for the
    /// reader.
    @Test func aStoppedReaderDropsCaptureRecordsNotPackets() throws {
        let live = try LiveLab(tag: "capfifo", withoutIPv6: true)
        defer { live.teardown() }
        try live.build()
        let fifo = live.file("capture.fifo")
        try #require(mkfifo(fifo, 0o600) == 0, "mkfifo \(fifo)")
        // The reader: once stopped, it holds the FIFO open and reads nothing.
        let reader = try live.spawn(live.host(0).namespace, ["sh", "-c", "exec cat '\(fifo)' > /dev/null"], log: "cat.log")
        defer {
            kill(reader.processIdentifier, SIGCONT)
            reader.terminate()
        }
        // Ferry's open of the FIFO waited for the reader; once it answers, the header has gone
        // through: stop the reader.
        let run = try trafficWhileCapturing(live, capture: fifo, tag: "fifo") { _ = kill(reader.processIdentifier, SIGSTOP) }
        #expect(run.pings.transmitted == 150 && run.pings.received == 150, "\(run.pings)")
        #expect(run.transfer.sentSHA256 == run.transfer.receivedSHA256, "\(run.transfer)")
        let dropped = try run.stats.counter("capture_dropped")
        #expect(dropped > 0, "\(run.stats)")
        #expect(run.status == 0, "ferry exit status \(run.status): \(live.logTail(0))")
        // One second of grace for the stalled reader, then Ferry ends.
        #expect(run.exitSeconds < 8, "ferry took \(run.exitSeconds) s to stop with its capture reader stopped")
        let log = (try? String(contentsOfFile: live.ferryLog(0), encoding: .utf8)) ?? ""
        #expect(occurrences(of: "capture: the writer falls behind the workers", in: log) == 1, "\(live.logTail(0))")
        #expect(log.contains("capture to \(fifo) closed:"), "the totals at exit: \(live.logTail(0))")
        print("[live capture stopped reader] pings \(run.pings.received)/\(run.pings.transmitted); \(run.transfer); "
              + "capture_dropped \(dropped), capture_write_failed \(try run.stats.counter("capture_write_failed")); "
              + "ferry stopped in \(String(format: "%.2f", run.exitSeconds)) s")
    }
}
