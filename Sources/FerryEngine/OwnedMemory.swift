/// Bytes allocated once, at start-up, and freed with the value that owns them: the packet path
/// reads and writes through `bytes` and never allocates.
struct OwnedBytes: ~Copyable {
    let bytes: UnsafeMutableRawBufferPointer

    init(count: Int, alignment: Int = 64) {
        bytes = .allocate(byteCount: count, alignment: alignment)
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
