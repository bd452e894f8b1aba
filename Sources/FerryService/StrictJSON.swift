/// RFC 8259 JSON, exactly: what Docker's parser (Go's encoding/json) takes. Foundation's
/// JSONSerialization takes more (a trailing comma, for one), and a daemon.json it would take
/// could still stop Docker from starting; so daemon.json is checked here first.
enum StrictJSON {
    struct Failure: Error {
        var line: Int
        var column: Int
        var reason: String
        var description: String { "line \(line), column \(column): \(reason)" }
    }

    static func check(_ bytes: [UInt8]) throws(Failure) {
        var p = Parser(bytes: bytes)
        p.blanks()
        try p.value(depth: 0)
        p.blanks()
        guard p.at >= bytes.count else { throw p.failure("text after the JSON value") }
    }

    struct Parser {
        let bytes: [UInt8]
        var at = 0

        func failure(_ reason: String) -> Failure {
            var line = 1, column = 1
            for b in bytes[..<min(at, bytes.count)] {
                if b == 0x0A { line += 1; column = 1 } else { column += 1 }
            }
            return Failure(line: line, column: column, reason: reason)
        }

        var current: UInt8? { at < bytes.count ? bytes[at] : nil }

        mutating func blanks() {
            while let c = current, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { at += 1 }
        }

        mutating func expect(_ c: Character) throws(Failure) {
            guard current == c.asciiValue else { throw failure("expected '\(c)'") }
            at += 1
        }

        mutating func value(depth: Int) throws(Failure) {
            guard depth < 512 else { throw failure("nested too deep") }
            switch current {
            case UInt8(ascii: "{"):
                at += 1
                blanks()
                if current == UInt8(ascii: "}") { at += 1; return }
                while true {
                    blanks()
                    guard current == UInt8(ascii: "\"") else { throw failure("expected a key in double quotes") }
                    try string()
                    blanks()
                    try expect(":")
                    blanks()
                    try value(depth: depth + 1)
                    blanks()
                    if current == UInt8(ascii: ",") { at += 1; continue }
                    try expect("}")
                    return
                }
            case UInt8(ascii: "["):
                at += 1
                blanks()
                if current == UInt8(ascii: "]") { at += 1; return }
                while true {
                    blanks()
                    try value(depth: depth + 1)
                    blanks()
                    if current == UInt8(ascii: ",") { at += 1; continue }
                    try expect("]")
                    return
                }
            case UInt8(ascii: "\""):
                try string()
            case UInt8(ascii: "t"): try word("true")
            case UInt8(ascii: "f"): try word("false")
            case UInt8(ascii: "n"): try word("null")
            case let c? where c == UInt8(ascii: "-") || (0x30...0x39).contains(c):
                try number()
            default:
                throw failure(current == nil ? "the text ends where a value should be" : "expected a value")
            }
        }

        mutating func word(_ w: String) throws(Failure) {
            for c in w.utf8 {
                guard current == c else { throw failure("expected \(w)") }
                at += 1
            }
        }

        mutating func string() throws(Failure) {
            at += 1
            while let c = current {
                at += 1
                switch c {
                case UInt8(ascii: "\""): return
                case UInt8(ascii: "\\"):
                    guard let e = current else { break }
                    at += 1
                    if e == UInt8(ascii: "u") {
                        for _ in 0..<4 {
                            guard let h = current, (0x30...0x39).contains(h) || (0x41...0x46).contains(h) || (0x61...0x66).contains(h) else {
                                throw failure("expected 4 hex digits after \\u")
                            }
                            at += 1
                        }
                    } else if !"\"\\/bfnrt".utf8.contains(e) {
                        throw failure("unknown escape")
                    }
                case 0..<0x20: throw failure("a control character inside a string")
                default: break
                }
            }
            throw failure("a string that never ends")
        }

        mutating func number() throws(Failure) {
            func digits(_ p: inout Parser) -> Int {
                var n = 0
                while let c = p.current, (0x30...0x39).contains(c) { p.at += 1; n += 1 }
                return n
            }
            if current == UInt8(ascii: "-") { at += 1 }
            if current == UInt8(ascii: "0") { at += 1 } else if digits(&self) == 0 { throw failure("expected a digit") }
            if current == UInt8(ascii: ".") {
                at += 1
                guard digits(&self) > 0 else { throw failure("expected a digit after '.'") }
            }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                at += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { at += 1 }
                guard digits(&self) > 0 else { throw failure("expected an exponent") }
            }
        }
    }
}
