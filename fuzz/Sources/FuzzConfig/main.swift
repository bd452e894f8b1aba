import FerryEngine
import FerrySettings
import FerryWire
import Foundation
import FuzzSupport

// The config file, as `ferry run --config` reads it: any bytes as YAML, then resolved into the
// settings the daemon would start with (the TAP and the local address supplied on the command
// line when the file has none, so that the rest of the file is reached). Holds: a refusal is a
// SettingsError whose message is one line or more of plain words (never empty, never a Swift
// optional or type dump); an accepted file gives settings that keep their promises: the
// engine's peers are the layout's, each listed once, subnets that do not overlap, values inside
// the ranges their options document; resolving the same file twice gives the same settings.

func resolve(_ file: ConfigFile) throws(SettingsError) -> RunSettings {
    var o = RunOptions()
    if file["tap"] == nil { o.tap = "t0" }
    if file["local"] == nil { o.local = "10.99.0.1" }
    return try RunSettings(options: o, file: file)
}

/// A refusal's message is words: never empty, never a Swift optional or type name (unless the
/// file itself holds that text, which a message may quote: a key `pOptional(` found the need).
func requireReadable(_ error: SettingsError, input text: String) {
    let m = error.description
    require(!m.isEmpty, "a refusal without a message")
    for dump in ["Optional(", "FerrySettings.", "FerryEngine."] where !text.contains(dump) {
        require(!m.contains(dump), "a refusal shows a Swift optional or type: \(m)")
    }
}

func summary(_ s: RunSettings) -> String {
    "\(s.layout) \(s.engine.peers) \(s.engine.destinationPort) \(s.engine.sourcePortRange) \(s.engine.ttl) "
        + "\(s.engine.ageingSeconds) \(s.engine.fdbCapacity) \(s.engine.batchSize) \(s.device) \(s.control) \(s.capture) "
        + "\(s.statsInterval) \(s.logLevel) \(String(describing: s.metrics)) \(s.engine.staticEntries.map { "\($0.mac)=\($0.peer)" })"
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let text = String(decoding: input(data, size), as: UTF8.self)
    let file: ConfigFile
    do {
        file = try ConfigFile(yaml: text, origin: "fuzz.yaml")
    } catch {
        requireReadable(error, input: text)
        return 0
    }
    for key in file.values.keys { require(RunSettings.keys.contains(key), "accepted the unknown key '\(key)'") }
    let settings: RunSettings
    do {
        settings = try resolve(file)
    } catch {
        requireReadable(error, input: text)
        return 0
    }
    let layout = settings.layout
    require(settings.engine.peers == layout.peers.map(\.address), "the engine's peers are not the layout's")
    require(Set(layout.peers.map(\.address)).count == layout.peers.count, "a peer accepted twice")
    let subnets = layout.peers.compactMap(\.subnet) + (layout.subnet.map { [$0.prefix] } ?? [])
    for (i, a) in subnets.enumerated() {
        for b in subnets[(i + 1)...] {
            require(!a.contains(b.address) && !b.contains(a.address), "overlapping subnets accepted: \(a) \(b)")
        }
    }
    if layout.mode == .routes { require(layout.peers.allSatisfy { $0.subnet != nil }, "routes mode with a peer without a subnet") }
    if layout.setup { require(layout.bridge != nil, "set-up accepted without a bridge") }
    let e = settings.engine
    require(e.destinationPort > 0 && e.sourcePortRange.lowerBound > 0, "port 0 accepted")
    require((1...86400 * 7).contains(e.ageingSeconds), "ageing out of range: \(e.ageingSeconds)")
    require((16...1 << 20).contains(e.fdbCapacity), "fdb size out of range: \(e.fdbCapacity)")
    require((1...512).contains(e.batchSize), "batch out of range: \(e.batchSize)")
    require((0...86400).contains(settings.statsInterval), "stats interval out of range")
    if case .vxlan(let vni) = e.encapsulation { require(vni <= VXLAN.maximumVNI, "VNI out of range: \(vni)") }
    if let m = settings.metrics { require(m.port > 0, "metrics port 0 accepted") }
    // The same file resolves the same way.
    guard let again = try? resolve(file) else {
        require(false, "a file accepted once is refused the second time")
        return 0
    }
    require(summary(again) == summary(settings), "the same file resolved two ways")
    return 0
}

@_cdecl("FuzzConfig_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzOne)
}
