import ArgumentParser
import FerryWire

struct OverheadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "overhead",
        abstract: "Tabulate what each encapsulation costs on the wire, per inner frame size.",
        discussion: """
            Inner frame sizes are Ethernet frames as a tunnel carries them (no FCS). "wire" counts the \
            outer frame with its FCS and padding to 64 bytes; "phys" adds preamble, start delimiter and \
            inter-frame gap (20 bytes), which is what limits frames per second on a link. "eff" is inner \
            bytes per wire byte; "vs native" is the tunnel's goodput as a share of sending the inner \
            frame natively. "fits" says whether the outer packet fits the underlay MTU unfragmented.
            """
    )

    @Option(name: .long, parsing: .upToNextOption, help: "Inner frame sizes in bytes (default: 64 128 256 512 1024 1450 1514 9014).")
    var sizes: [Int] = [64, 128, 256, 512, 1024, 1450, 1514, 9014]

    @Option(name: .long, help: "Underlay MTU for the 'fits' column.")
    var mtu = 1500

    @Flag(name: .long, help: "Print comma-separated values.")
    var csv = false

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    func validate() throws {
        guard !(csv && json) else { throw ValidationError("choose one of --csv and --json") }
        for size in sizes where !(Ethernet.headerLength...65535).contains(size) {
            throw ValidationError("inner frame size \(size) is out of range; use 14 to 65535 bytes")
        }
        guard (68...65535).contains(mtu) else { throw ValidationError("MTU \(mtu) is out of range; use 68 to 65535") }
    }

    struct Row: Codable {
        var tunnel: String
        var innerBytes: Int
        var headerBytes: Int
        var wireBytes: Int
        var nativeWireBytes: Int
        var addedBytes: Int
        var efficiency: Double
        var physicalEfficiency: Double
        var relativeToNative: Double
        var fitsMTU: Bool
    }

    func rows() -> [Row] {
        EncapsulationOverhead.Variant.standard.flatMap { variant in
            sizes.map { size in
                let o = EncapsulationOverhead(variant: variant, innerFrameBytes: size, underlayMTU: mtu)
                return Row(tunnel: variant.name, innerBytes: size, headerBytes: variant.headerBytes,
                           wireBytes: o.tunnelWireBytes, nativeWireBytes: o.nativeWireBytes, addedBytes: o.addedBytes,
                           efficiency: round4(o.efficiency), physicalEfficiency: round4(o.physicalEfficiency),
                           relativeToNative: round4(o.relativeToNative), fitsMTU: o.fitsMTU)
            }
        }
    }

    func run() throws {
        let rows = rows()
        if json {
            print(try jsonString(rows))
        } else if csv {
            print("tunnel,inner_bytes,header_bytes,wire_bytes,native_wire_bytes,added_bytes,efficiency,physical_efficiency,relative_to_native,fits_mtu")
            for r in rows {
                print([r.tunnel, "\(r.innerBytes)", "\(r.headerBytes)", "\(r.wireBytes)", "\(r.nativeWireBytes)", "\(r.addedBytes)",
                       "\(r.efficiency)", "\(r.physicalEfficiency)", "\(r.relativeToNative)", "\(r.fitsMTU)"].joined(separator: ","))
            }
        } else {
            print("tunnel                   inner  header  wire  native  added    eff   phys  vs native  fits \(mtu)")
            var last = ""
            for r in rows {
                if r.tunnel != last && !last.isEmpty { print("") }
                last = r.tunnel
                print(pad(r.tunnel, 23) + pad(String(r.innerBytes), 7, left: true) + pad(String(r.headerBytes), 8, left: true)
                      + pad(String(r.wireBytes), 6, left: true) + pad(String(r.nativeWireBytes), 8, left: true)
                      + pad("+\(r.addedBytes)", 7, left: true) + pad(percent(r.efficiency), 7, left: true)
                      + pad(percent(r.physicalEfficiency), 7, left: true) + pad(percent(r.relativeToNative), 11, left: true)
                      + "  " + (r.fitsMTU ? "yes" : "no"))
            }
        }
    }
}

func round4(_ x: Double) -> Double { (x * 10000).rounded() / 10000 }

func percent(_ x: Double) -> String {
    let tenths = Int((x * 1000).rounded())
    return "\(tenths / 10).\(tenths % 10)%"
}
