import NIOCore
import NIOHTTP1

/// One connection's requests: GET /metrics answered with the exporter's text; 404, 405 or
/// 413 otherwise. Keeps the connection for the next request (Prometheus reuses it) unless the
/// client asked to close, and closes it when a request is not complete within the limit.
final class MetricsHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let exporter: MetricsExporter
    let limits: MetricsServer.Limits
    private var head: HTTPRequestHead?
    private var bodyBytes = 0
    /// Closes the connection if the next request is not complete in time.
    private var deadline: Scheduled<Void>?

    init(exporter: MetricsExporter, limits: MetricsServer.Limits) {
        self.exporter = exporter
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        armDeadline(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            bodyBytes = 0
        case .body(let chunk):
            bodyBytes += chunk.readableBytes
            if bodyBytes > limits.bodyBytes, head != nil {
                head = nil
                respond(context, .payloadTooLarge, "a request to Ferry's metrics carries no body\n", close: true)
            }
        case .end:
            guard let h = head else { return }  // answered already (413)
            head = nil
            let path = h.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            if path != "/metrics" {
                respond(context, .notFound, "not found: Ferry serves its metrics on /metrics\n", close: !h.isKeepAlive)
            } else if h.method != .GET {
                respond(context, .methodNotAllowed, "\(h.method) not allowed: GET /metrics\n", close: !h.isKeepAlive,
                        extra: [("Allow", "GET")])
            } else {
                respond(context, .ok, exporter.render(), close: !h.isKeepAlive,
                        contentType: "text/plain; version=0.0.4; charset=utf-8")
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func armDeadline(_ context: ChannelHandlerContext) {
        deadline?.cancel()
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: limits.requestTimeout) { channel.close(promise: nil) }
    }

    private func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ body: String, close: Bool,
                         extra: [(String, String)] = []) {
        respond(context, status, Array(body.utf8), close: close, contentType: "text/plain; charset=utf-8", extra: extra)
    }

    private func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ body: [UInt8], close: Bool,
                         contentType: String, extra: [(String, String)] = []) {
        var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", String(body.count))] + extra)
        if close { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        if close {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            armDeadline(context)
        }
    }
}
