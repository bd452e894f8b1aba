/// Bytes allocated once, at start-up, and freed with the value that owns them: the packet path
/// reads and writes through `bytes` and never allocates.
///
/// Zeroed at once, so that every page is resident from the start: the packet path never takes
/// a first-touch page fault when a large batch first reaches the far slots (at random moments,
/// more often on a loaded machine), and the process's RSS is what it will stay, not a figure
/// that creeps for minutes (the soak saw +0.5 MiB in 10 min before this).
struct OwnedBytes: ~Copyable {
    let bytes: UnsafeMutableRawBufferPointer

    init(count: Int, alignment: Int = 64) {
        bytes = .allocate(byteCount: count, alignment: alignment)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit { bytes.deallocate() }

    var base: UnsafeMutableRawPointer { bytes.baseAddress! }
    var count: Int { bytes.count }
}

/// A fixed number of trivial values (indices, flags, addresses), allocated once and freed with
/// their owner. Values are written before they are read; nothing is deinitialised.
struct OwnedSlots<Element>: ~Copyable {
    let pointer: UnsafeMutablePointer<Element>
    let count: Int

    init(count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(1, count))
    }

    init(count: Int, repeating value: Element) {
        self.init(count: count)
        pointer.initialize(repeating: value, count: max(1, count))
    }

    deinit { pointer.deallocate() }

    subscript(_ i: Int) -> Element {
        get { pointer[i] }
        nonmutating set { pointer[i] = newValue }
    }
}
