// The tokenizer and word vocabulary of tgir/vocab.py, reimplemented so that C callers get the very
// ids the Python side (training, export, the Python runtimes) computes for the same text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tgir {

/// Like tgir.vocab.tokenize: special tokens (<UNK>, <AND>, <BOS>, <EOS>, any case) are kept whole and
/// upper-cased; everything else loses its non-ASCII characters and punctuation, is lower-cased and
/// split on ASCII whitespace. `utf8` may hold invalid UTF-8: bad bytes are dropped like any other
/// non-ASCII character. Tokens are UTF-8 (a special written with U+212A KELVIN SIGN keeps it, as
/// Python's str.upper() does).
std::vector<std::string> tokenize(std::string_view utf8);

/// Word <-> id mapping with AMC's reserved ids, as tgir.vocab.Vocabulary.
class Vocabulary {
 public:
  /// Just the four specials, max_length 64 (Python's Vocabulary([])).
  Vocabulary();

  /// Parse the text of a vocab.json written by Vocabulary.save, with the checks of Vocabulary.load.
  /// `where` (the file's path) starts every error message. Throws tgir::Error(TGIR_ERR_BAD_BUNDLE).
  static Vocabulary from_json_text(const std::string& text, const std::string& where);

  /// Like Vocabulary.encode: ids of the tokens, unknown words as <UNK> = 0, cut at max_length; a
  /// text without tokens gives {0}.
  std::vector<int64_t> encode(std::string_view utf8) const;

  size_t size() const { return itos_.size(); }
  size_t max_length() const { return max_length_; }

 private:
  Vocabulary(const std::vector<std::string>& words, size_t max_length, const std::string& where);

  std::vector<std::string> itos_;
  std::unordered_map<std::string, int64_t> stoi_;
  size_t max_length_ = 64;
};

}  // namespace tgir
