#ifndef CFUZZERDRIVER_H
#define CFUZZERDRIVER_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (compiler-rt, linked by -sanitize=fuzzer): runs `callback` as
/// LLVMFuzzerTestOneInput with the command line's options. SwiftPM links an executable's
/// `<module>_main` as `main`, which keeps libFuzzer's own `main` out; this is called from it.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
#endif
