// The engine's trace (`ferry ctl trace`): what the data path would do with one frame, by the
// first worker's decisions over the state every worker shares (the workers differ only in their
// queues and buffers, which a trace does not touch).
extension Engine {
    /// What the data path would do with `frame` going `direction`, without sending, learning or
    /// counting anything (`Worker.trace`). Safe from any thread.
    public func trace(frame: [UInt8], direction: TraceDirection) -> TraceReport {
        workers[0].trace(frame, direction)
    }
}
