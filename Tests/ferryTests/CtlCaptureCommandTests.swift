import Foundation
import Testing

/// `ferry ctl capture`'s own checks, made before it connects: each bad value named with what to
/// give instead; and no ferry at the socket is said so, with no file left behind.
@Suite struct CtlCaptureCommandTests {
    @Test func badValuesAreUsageErrorsThatSayWhatToGive() throws {
        try withScratch { s in
            let out = s.file("x.pcapng"), socket = s.file("c.sock")
            for (arguments, says) in [(["--point", "middle"], "--point 'middle' is not a capture point; use inner, outer, drops"),
                                      (["--count", "0"], "--count must be a whole number from 1"),
                                      (["--duration", "0"], "--duration must be more than 0"),
                                      (["--filter", String(repeating: "x", count: 300)], "shorten the filter")] {
                let r = try s.ferry(["ctl", "capture", "--control", socket] + arguments + ["-w", out])
                #expect(r.status == CLIErrorTests.usageError && r.stderr.contains(says), "\(arguments): \(r)")
            }
            let none = try s.ferry(["ctl", "capture", "--control", socket, "-w", out])
            #expect(none.status != 0 && none.stderr.contains("no ferry is running"), "\(none)")
            #expect(!FileManager.default.fileExists(atPath: out), "an empty capture file was left behind")
        }
    }
}
