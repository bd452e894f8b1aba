import Foundation
import Testing

/// `ferry doctor`'s config errors: it reads the file as `ferry run` does, so a file it cannot
/// read is exit 1 and a bad value a usage error (64), each saying what is wrong.
@Suite struct DoctorCommandTests {
    @Test func aMissingConfigIsNamed() throws {
        try withScratch { s in
            let missing = s.file("nope.yaml")
            let o = try s.ferry(["doctor", "--config", missing])
            #expect(o.status == 1 && o.stderr.contains(missing), "\(o)")
        }
    }

    @Test func aBadValueIsAUsageErrorThatSaysWhy() throws {
        try withScratch { s in
            let config = s.file("h0.yaml")
            try "tap: ferry0\nlocal: 10.99.0.1\npeer: [10.99.0.300]\n".write(toFile: config, atomically: true, encoding: .utf8)
            let o = try s.ferry(["doctor", "--config", config])
            #expect(o.status == 64 && o.stderr.contains("10.99.0.300"), "\(o)")
        }
    }
}
