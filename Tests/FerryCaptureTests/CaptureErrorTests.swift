import Testing
import FerryCapture

@Suite struct CaptureErrorTests {
    static let all: [CaptureError] = [
        .fileNotFound(path: "/tmp/a.pcap"),
        .cannotOpen(path: "/tmp/a.pcap", reason: "unknown file format"),
        .notEthernet(path: "/tmp/a.pcap", linkType: "LINUX_SLL"),
        .badFilter(expression: "udp port", reason: "syntax error"),
        .read(source: "/tmp/a.pcap", reason: "truncated dump file"),
        .write(path: "/tmp/a.pcap", reason: "No such file or directory"),
        .symbolicLink(path: "/tmp/a.pcap"),
    ]

    @Test(arguments: all)
    func descriptionIsOneLineNamingTheSubject(error: CaptureError) {
        let text = error.description
        #expect(!text.contains("\n"))
        let subject: String
        switch error {
        case .fileNotFound(let path), .cannotOpen(let path, _), .notEthernet(let path, _),
             .read(let path, _), .write(let path, _), .symbolicLink(let path):
            subject = path
        case .badFilter(let expression, _):
            subject = expression
        }
        #expect(text.contains(subject))
        // Says how to fix it, not only what broke.
        #expect(text.contains(";"))
    }

    @Test func reasonsFromLibpcapAreKept() {
        #expect(CaptureError.cannotOpen(path: "x", reason: "unknown file format").description.contains("unknown file format"))
        #expect(CaptureError.badFilter(expression: "udp port", reason: "syntax error").description.contains("syntax error"))
    }

    @Test func notEthernetPointsAwayFromTheAnyInterface() {
        let text = CaptureError.notEthernet(path: "x.pcap", linkType: "LINUX_SLL").description
        #expect(text.contains("LINUX_SLL"))
        #expect(text.contains("not `-i any`"))
    }
}
