import FerryLab
import Foundation
import Testing

extension RunErrorTests {
    /// `--metrics` refused before the TAP is touched: a port in use (named with its address),
    /// an address with no port, an IPv6 address without brackets.
    @Test(.enabled(if: isRoot, "needs root for network namespaces"))
    func metricsAddressErrorsSayWhatToDo() throws {
        try withScratch { s in
            try withNamespace("ferrymx") { ns in
                let base = ["run", "--tap", "t0", "--vni", "1", "--peer", "10.99.0.2", "--local", "10.99.0.1",
                            "--stats-interval", "0", "--control", s.file("ctl.sock")]
                let holder = Process()
                holder.executableURL = URL(fileURLWithPath: try Tools.system("ip"))
                holder.arguments = ["netns", "exec", ns, "python3", "-c",
                                    "import socket,time; s=socket.socket(); s.bind(('10.99.0.1',9108)); s.listen(); print('bound', flush=True); time.sleep(30)"]
                let pipe = Pipe()
                holder.standardOutput = pipe
                try holder.run()
                // SIGKILL: the test runner's blocked SIGTERM is inherited by its children.
                defer { kill(holder.processIdentifier, SIGKILL); holder.waitUntilExit() }
                _ = pipe.fileHandleForReading.availableData  // "bound": the port is taken

                let inUse = try ferryIn(ns, s, base + ["--metrics", "10.99.0.1:9108"])
                #expect(inUse.status != 0 && inUse.stderr.contains("cannot serve metrics on 10.99.0.1:9108: the port is in use"),
                        "\(inUse)")
                let link = try Lab.capture(["ip", "-n", ns, "link", "show", "t0"])
                #expect(link.status != 0, "the TAP was made before the metrics port was refused")

                let noPort = try ferryIn(ns, s, base + ["--metrics", "10.99.0.1"])
                #expect(noPort.status != 0 && noPort.stderr.contains("is not ADDRESS:PORT"), "\(noPort)")
                let bare6 = try ferryIn(ns, s, base + ["--metrics", "fd00::1:9108"])
                #expect(bare6.status != 0 && bare6.stderr.contains("[::1]:"), "\(bare6)")
                // The same from the config file.
                try "metrics: 10.99.0.1:9108\n".write(toFile: s.file("m.yaml"), atomically: true, encoding: .utf8)
                let fromFile = try ferryIn(ns, s, base + ["--config", s.file("m.yaml")])
                #expect(fromFile.status != 0 && fromFile.stderr.contains("cannot serve metrics on 10.99.0.1:9108"), "\(fromFile)")
            }
        }
    }
}
