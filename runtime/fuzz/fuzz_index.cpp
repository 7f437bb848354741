// libFuzzer: the .npy reader of index files never crashes or over-reads on arbitrary bytes.
#include <cstdint>
#include <string>

#include "error.h"
#include "index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    size_t rows = 0, cols = 0;
    auto values = tgir::Index::parse_npy(bytes, rows, cols, "fuzz/embeddings.npy");
    if (values.size() != rows * cols) __builtin_trap();
  } catch (const tgir::Error&) {
  }
  return 0;
}
