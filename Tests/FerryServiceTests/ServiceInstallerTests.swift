import FerryService
import Foundation
import Testing

@Suite struct ServiceInstallerTests {
    /// A scratch root with what a host may have already: a daemon.json with keys of its own,
    /// another unit, an /etc/ferry of the user's.
    final class Root {
        let path = NSTemporaryDirectory() + "ferry-install-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let daemon = #"{"log-driver": "journald", "mtu": 1500, "features": {"buildkit": true}}"#
        init(docker: Bool = true) throws {
            let fm = FileManager.default
            try fm.createDirectory(atPath: path + "/etc/systemd/system", withIntermediateDirectories: true)
            try Data("[Service]\nExecStart=/bin/true\n".utf8).write(to: URL(fileURLWithPath: path + "/etc/systemd/system/other.service"))
            if docker {
                try fm.createDirectory(atPath: path + "/etc/docker", withIntermediateDirectories: true)
                try Data(daemon.utf8).write(to: URL(fileURLWithPath: path + "/etc/docker/daemon.json"))
            }
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }

        /// Every file and directory under the root, with each file's bytes.
        func tree() -> [String: Data?] {
            var out: [String: Data?] = [:]
            let e = FileManager.default.enumerator(atPath: path)
            while let rel = e?.nextObject() as? String {
                var dir: ObjCBool = false
                _ = FileManager.default.fileExists(atPath: path + "/" + rel, isDirectory: &dir)
                out[rel] = dir.boolValue ? nil : FileManager.default.contents(atPath: path + "/" + rel)
            }
            return out
        }
        func read(_ rel: String) -> String? { FileManager.default.contents(atPath: path + rel).map { String(decoding: $0, as: UTF8.self) } }
        func write(_ rel: String, _ text: String) throws { try Data(text.utf8).write(to: URL(fileURLWithPath: path + rel)) }
    }

    static let unit = ServiceUnit(binary: "/usr/local/bin/ferry")
    // Made afresh each time: as a `static let`, CI's AddressSanitizer run reported its storage
    // as leaked (it outlives every test, held by the global alone).
    static var config: Data { Data("tap: ferry0\nbridge: bridge0\nlocal: 10.99.0.1\nvni: 42\n".utf8) }

    /// Install writes the unit, the config, the drop-in of a `user:` config and daemon.json's
    /// two keys; uninstall leaves the tree byte for byte as it was before.
    @Test func uninstallLeavesTheTreeAsItWas() throws {
        let root = try Root()
        let before = root.tree()
        let installer = ServiceInstaller(root: root.path, unit: Self.unit)
        let report = try installer.install(.init(name: "hostA", config: Self.config, becomesUser: true, docker: ("bridge0", 1450)))
        #expect(root.read("/etc/systemd/system/ferry@.service") == Self.unit.text)
        #expect(root.read("/etc/ferry/hostA.yaml") == String(decoding: Self.config, as: UTF8.self))
        #expect(root.read("/etc/systemd/system/ferry@hostA.service.d/user.conf") == ServiceUnit.userDropIn)
        let daemonText = try #require(root.read("/etc/docker/daemon.json"))
        let daemon = try #require(try JSONSerialization.jsonObject(with: Data(daemonText.utf8)) as? [String: Any])
        #expect(daemon["bridge"] as? String == "bridge0" && daemon["mtu"] as? Int == 1450 && daemon["log-driver"] as? String == "journald")
        #expect((daemon["features"] as? [String: Bool])?["buildkit"] == true)
        #expect(root.read("/etc/docker/daemon.json.ferry-hostA.bak") == root.daemon)
        #expect(report.contains { $0.contains("systemctl daemon-reload && systemctl enable ferry@hostA.service") })
        #expect(installer.installed() == ["hostA"])

        // The same again changes nothing.
        let again = try installer.install(.init(name: "hostA", config: Self.config, becomesUser: true, docker: ("bridge0", 1450)))
        #expect(again == ["ferry@hostA.service is installed already as asked: nothing changed"])

        _ = try installer.uninstall(name: nil)
        #expect(root.tree() == before, "left: \(Set(root.tree().keys).symmetricDifference(before.keys))")
    }

    /// A different config in the way: refused, nothing written; with --force it is replaced and
    /// uninstall puts it back. A config edited after install is left by uninstall.
    @Test func aDifferentFileIsRefusedThenForcedThenPutBack() throws {
        let root = try Root(docker: false)
        try FileManager.default.createDirectory(atPath: root.path + "/etc/ferry", withIntermediateDirectories: true)
        try root.write("/etc/ferry/hostA.yaml", "tap: mine\n")
        let before = root.tree()
        let installer = ServiceInstaller(root: root.path, unit: Self.unit)
        #expect { try installer.install(.init(name: "hostA", config: Self.config)) } throws: {
            "\($0)".contains("/etc/ferry/hostA.yaml exists with other content") && "\($0)".contains("--force")
        }
        #expect(root.tree() == before)

        let forced = ServiceInstaller(root: root.path, unit: Self.unit, force: true)
        _ = try forced.install(.init(name: "hostA", config: Self.config))
        #expect(root.read("/etc/ferry/hostA.yaml") == String(decoding: Self.config, as: UTF8.self))
        _ = try forced.uninstall(name: "hostA")
        #expect(root.tree() == before)

        _ = try installer.install(.init(name: "hostB", config: Self.config))
        try root.write("/etc/ferry/hostB.yaml", "tap: edited\n")
        let report = try installer.uninstall(name: "hostB")
        #expect(report.contains { $0.contains("hostB.yaml: left as it is: changed since install") })
        #expect(root.read("/etc/ferry/hostB.yaml") == "tap: edited\n")
        #expect(root.read("/etc/systemd/system/ferry@.service") == nil)
    }

    /// daemon.json that is not JSON: refused before anything is written.
    @Test func invalidDaemonJSONChangesNothing() throws {
        let root = try Root()
        try root.write("/etc/docker/daemon.json", "{\"mtu\": 1500,,}")
        let before = root.tree()
        #expect { try ServiceInstaller(root: root.path, unit: Self.unit).install(.init(name: "hostA", config: Self.config, docker: ("bridge0", 1450))) } throws: {
            "\($0)".contains("daemon.json is not valid JSON") && "\($0)".contains("nothing was changed")
        }
        #expect(root.tree() == before)
    }

    /// Two instances share the template: it stays until the last one goes, whichever order.
    @Test func theTemplateGoesWithTheLastInstance() throws {
        let root = try Root(docker: false)
        let before = root.tree()
        let installer = ServiceInstaller(root: root.path, unit: Self.unit)
        _ = try installer.install(.init(name: "a", config: Self.config))
        _ = try installer.install(.init(name: "b", config: Self.config))
        #expect(installer.installed() == ["a", "b"])
        #expect { try installer.uninstall(name: nil) } throws: { "\($0)".contains("say which with --name") }
        _ = try installer.uninstall(name: "a")
        #expect(root.read("/etc/systemd/system/ferry@.service") == Self.unit.text)
        #expect(root.read("/etc/ferry/a.yaml") == nil && root.read("/etc/ferry/b.yaml") != nil)
        _ = try installer.uninstall(name: nil)
        #expect(root.tree() == before)
    }

    /// Names systemd would have to escape, or that are no file name, are refused.
    @Test func refusesNamesThatNeedEscaping() {
        for bad in ["", "a b", "../x", ".hidden", "-x", "a/b", "é"] {
            #expect(throws: ServiceInstaller.Failure.self) { try ServiceInstaller.checkName(bad) }
        }
        #expect(throws: Never.self) { try ServiceInstaller.checkName("host-A_1.lab") }
    }
}
