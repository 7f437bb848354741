// libFuzzer: vocab.json parsing and tokenization of arbitrary bytes never crash; malformed input is a
// tgir::Error and nothing else.
#include <cstdint>
#include <string>

#include "error.h"
#include "text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const size_t cut = bytes.find('\n');  // first line: a text to tokenize; the rest: a vocab.json
  const std::string text = bytes.substr(0, cut), json = cut == std::string::npos ? "" : bytes.substr(cut + 1);
  tgir::tokenize(text);
  try {
    auto vocab = tgir::Vocabulary::from_json_text(json, "fuzz/vocab.json");
    auto ids = vocab.encode(text);
    if (ids.empty() || ids.size() > vocab.max_length()) __builtin_trap();
  } catch (const tgir::Error&) {
  }
  return 0;
}
