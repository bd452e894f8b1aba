import FerryControl
import Foundation
import FuzzSupport

// The control socket's request parser, on any bytes a client may send as its line (decoded as
// the server decodes them, invalid UTF-8 repaired). Holds: the line is accepted as a request
// whose name is the line without the whitespace around it, or refused with a message; the
// refusal's JSON (what the server sends back) parses as JSON, an object whose one key `error`
// holds exactly the message.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = input(data, size)
    let line = String(decoding: bytes, as: UTF8.self)
    do throws(ControlRequestError) {
        let request = try ControlRequest(line: line)
        require(request.rawValue == line.trimmingCharacters(in: .whitespacesAndNewlines), "accepted '\(request)' from another line")
        require(line.utf8.count <= ControlRequest.maximumLength, "accepted a line over the limit")
    } catch {
        let message = error.description
        require(!message.isEmpty, "refusal without a message")
        let reply = ControlReply.refusal(message)
        guard let object = try? JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any] else {
            require(false, "refusal is not a JSON object: \(reply)")
            return 0
        }
        require(object.count == 1 && object["error"] as? String == message, "refusal JSON does not hold the message: \(reply)")
    }
    // A substring (as the server slices its buffer) parses the same.
    let sliced = line.dropFirst(min(1, line.count))
    let whole = try? ControlRequest(line: String(sliced))
    require((try? ControlRequest(line: sliced)) == whole, "a substring parses otherwise than its string")
    return 0
}

@_cdecl("FuzzControlRequest_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzOne)
}
