// libFuzzer: manifest.json parsing never crashes on arbitrary bytes. The input is written as the
// manifest of a scratch bundle folder (with a valid vocab.json beside it), then opened with checksum
// verification, as tgir_runtime_open does.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bundle.h"
#include "error.h"

namespace {

std::string scratch_dir() {
  static std::string dir = [] {
    char tmpl[] = "/tmp/tgir_fuzz_manifest_XXXXXX";
    std::string d = mkdtemp(tmpl);
    std::FILE* f = std::fopen((d + "/vocab.json").c_str(), "wb");
    std::fputs("{\"format\": \"tgir-vocab\", \"version\": 1, \"specials\": {\"<UNK>\": 0, \"<AND>\": 1, "
               "\"<BOS>\": 2, \"<EOS>\": 3}, \"max_length\": 8, \"words\": [\"red\"]}", f);
    std::fclose(f);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = scratch_dir();
  std::FILE* f = std::fopen((dir + "/manifest.json").c_str(), "wb");
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    tgir::Bundle::open(dir, true);
  } catch (const tgir::Error&) {
  }
  return 0;
}
