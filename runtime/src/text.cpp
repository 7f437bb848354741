// The tokenizer and vocabulary of tgir/vocab.py. Every rule here mirrors a line of that file; the
// comments say which Python behaviour a rule reproduces.
#include "text.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include <nlohmann/json.hpp>

#include "error.h"

namespace tgir {
namespace {

constexpr std::array<const char*, 4> kSpecials = {"<UNK>", "<AND>", "<BOS>", "<EOS>"};
constexpr uint32_t kLongS = 0x17F;    // LATIN SMALL LETTER LONG S, UTF-8 C5 BF
constexpr uint32_t kKelvin = 0x212A;  // KELVIN SIGN, UTF-8 E2 84 AA
constexpr uint32_t kOther = 0xFFFFFFFF;

// One character of the text as far as the rules care: an ASCII code, kLongS or kKelvin (the only
// non-ASCII characters Python's re.IGNORECASE matches against the letters of the specials: U+017F
// folds to 's', U+212A to 'k'), or kOther for anything else, which is dropped and matches nothing.
// Non-ASCII bytes other than those two sequences become one kOther each: how many there are does not
// matter, since any of them breaks a special and is then dropped. A lead byte (C5, E2) can never be
// the continuation of an earlier sequence, so spotting the two sequences byte-wise finds exactly the
// characters a UTF-8 decoder would, also inside invalid UTF-8.
std::vector<uint32_t> units_of(std::string_view s) {
  std::vector<uint32_t> units;
  units.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      units.push_back(b);
      i += 1;
    } else if (s.compare(i, 2, "\xC5\xBF") == 0) {
      units.push_back(kLongS);
      i += 2;
    } else if (s.compare(i, 3, "\xE2\x84\xAA") == 0) {
      units.push_back(kKelvin);
      i += 3;
    } else {
      units.push_back(kOther);
      i += 1;
    }
  }
  return units;
}

// Case-insensitive match of one character against an upper-case ASCII letter or '<' / '>'.
bool matches(uint32_t unit, char want) {
  if (unit == static_cast<unsigned char>(want)) return true;
  if (want >= 'A' && want <= 'Z' && unit == static_cast<uint32_t>(want - 'A' + 'a')) return true;
  return (want == 'S' && unit == kLongS) || (want == 'K' && unit == kKelvin);
}

// Which special starts at units[i], or -1. The specials all have five characters and differ in the
// second, so at most one matches at a position, as with the regex alternation.
int special_at(const std::vector<uint32_t>& units, size_t i) {
  if (units.size() - i < 5) return -1;
  for (int s = 0; s < 4; ++s) {
    bool all = true;
    for (size_t k = 0; k < 5 && all; ++k) all = matches(units[i + k], kSpecials[s][k]);
    if (all) return s;
  }
  return -1;
}

// Python's str.upper() of a matched special: ASCII letters upper-cased, U+017F -> 'S', and U+212A,
// which is already upper case, kept.
std::string upper_special(const std::vector<uint32_t>& units, size_t i) {
  std::string out;
  for (size_t k = i; k < i + 5; ++k) {
    if (units[k] == kLongS) out += 'S';
    else if (units[k] == kKelvin) out += "\xE2\x84\xAA";
    else out += static_cast<char>(units[k] >= 'a' && units[k] <= 'z' ? units[k] - 'a' + 'A' : units[k]);
  }
  return out;
}

// string.punctuation.
bool is_punct(uint32_t c) {
  static const char kPunctuation[] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  return c != 0 && c < 0x80 && std::strchr(kPunctuation, static_cast<int>(c)) != nullptr;  // strchr finds '\0'
}

// The ASCII characters Python's str.split() splits on: \t \n \v \f \r, space and \x1c-\x1f.
bool is_space(uint32_t c) { return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20); }

// A piece between specials: encode("ascii", "ignore"), lower(), translate(drop punctuation), split().
void split_piece(const std::vector<uint32_t>& units, size_t begin, size_t end, std::vector<std::string>& out) {
  std::string token;
  for (size_t i = begin; i < end; ++i) {
    uint32_t c = units[i];
    if (c >= 0x80 || is_punct(c)) continue;  // dropping never joins or splits words by itself
    if (is_space(c)) {
      if (!token.empty()) out.push_back(std::move(token));
      token.clear();
      continue;
    }
    token += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  }
  if (!token.empty()) out.push_back(std::move(token));
}

}  // namespace

std::vector<std::string> tokenize(std::string_view utf8) {
  const std::vector<uint32_t> units = units_of(utf8);
  std::vector<std::string> tokens;
  size_t piece = 0;  // start of the text since the last special, as _SPECIAL_RE.split cuts it
  for (size_t i = 0; i < units.size();) {
    if (special_at(units, i) < 0) {
      ++i;
      continue;
    }
    split_piece(units, piece, i, tokens);
    tokens.push_back(upper_special(units, i));
    i += 5;
    piece = i;
  }
  split_piece(units, piece, units.size(), tokens);
  return tokens;
}

Vocabulary::Vocabulary() : Vocabulary({}, 64, "") {}

Vocabulary::Vocabulary(const std::vector<std::string>& words, size_t max_length, const std::string& where)
    : itos_(kSpecials.begin(), kSpecials.end()), max_length_(max_length) {
  // Python drops words equal to a special, then requires the rest to be unique.
  for (const auto& w : words) {
    bool special = false;
    for (const char* s : kSpecials) special = special || w == s;
    if (!special) itos_.push_back(w);
  }
  stoi_.reserve(itos_.size());
  for (size_t i = 0; i < itos_.size(); ++i) {
    if (!stoi_.emplace(itos_[i], static_cast<int64_t>(i)).second)
      fail(TGIR_ERR_BAD_BUNDLE, where + ": vocabulary words must be unique ('" + itos_[i] + "' repeats)");
  }
}

namespace {

// Vocabulary.load's checks on the parsed document; returns the words and sets max_length.
std::vector<std::string> checked_words(const nlohmann::json& data, const std::string& where, size_t& max_length) {
  static const nlohmann::json kNone;  // Python's dict.get default
  auto get = [&](const char* key) -> const nlohmann::json& {
    auto it = data.find(key);
    return it == data.end() ? kNone : *it;
  };
  const auto& format = get("format");
  if (!format.is_string() || format.get<std::string>() != "tgir-vocab")
    fail(TGIR_ERR_BAD_BUNDLE, where + ": not a tgir vocabulary (expected \"format\": \"tgir-vocab\")");
  const auto& version = get("version");
  if (!version.is_number() || version != 1)  // a JSON 1.0 equals 1, as in Python
    fail(TGIR_ERR_BAD_BUNDLE, where + ": vocabulary version " + version.dump() + "; this tgir reads 1");
  const auto& specials = get("specials");
  bool same = specials.is_object() && specials.size() == kSpecials.size();
  for (size_t i = 0; same && i < kSpecials.size(); ++i) {
    auto it = specials.find(kSpecials[i]);
    same = it != specials.end() && it->is_number() && *it == i;
  }
  if (!same)
    fail(TGIR_ERR_BAD_BUNDLE,
         where + ": special ids differ from {'<UNK>': 0, '<AND>': 1, '<BOS>': 2, '<EOS>': 3}");
  const auto& words = get("words");
  if (!words.is_array()) fail(TGIR_ERR_BAD_BUNDLE, where + ": 'words' must be a list of strings");
  std::vector<std::string> out;
  out.reserve(words.size());
  for (const auto& w : words) {
    if (!w.is_string()) fail(TGIR_ERR_BAD_BUNDLE, where + ": 'words' must be a list of strings");
    out.push_back(w.get<std::string>());
  }
  const nlohmann::json length = data.contains("max_length") ? data.at("max_length") : nlohmann::json(64);
  // nlohmann holds non-negative integers as unsigned and compares those with signed ones through
  // int64_t, so read the two kinds apart rather than writing `length < 1`.
  uint64_t n = 0;
  if (length.is_number_unsigned()) n = length.get<uint64_t>();
  else if (length.is_number_integer() && length.get<int64_t>() > 0) n = static_cast<uint64_t>(length.get<int64_t>());
  if (n < 1) fail(TGIR_ERR_BAD_BUNDLE, where + ": max_length must be an integer >= 1, got " + length.dump());
  max_length = static_cast<size_t>(std::min<uint64_t>(n, SIZE_MAX));
  return out;
}

}  // namespace

Vocabulary Vocabulary::from_json_text(const std::string& text, const std::string& where) {
  nlohmann::json data;
  try {
    data = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& err) {
    fail(TGIR_ERR_BAD_BUNDLE, where + ": not valid JSON (" + err.what() + ")");
  }
  if (!data.is_object())
    fail(TGIR_ERR_BAD_BUNDLE, where + ": not a tgir vocabulary (expected \"format\": \"tgir-vocab\")");
  size_t max_length = 64;
  std::vector<std::string> words;
  try {  // checked_words tests each value's type before reading it; this only fences nlohmann in
    words = checked_words(data, where, max_length);
  } catch (const nlohmann::json::exception& err) {
    fail(TGIR_ERR_BAD_BUNDLE, where + ": malformed vocabulary (" + err.what() + ")");
  }
  return Vocabulary(words, max_length, where);
}

std::vector<int64_t> Vocabulary::encode(std::string_view utf8) const {
  std::vector<std::string> tokens = tokenize(utf8);
  if (tokens.size() > max_length_) tokens.resize(max_length_);
  std::vector<int64_t> ids;
  ids.reserve(tokens.size() + 1);
  for (const auto& t : tokens) {
    auto it = stoi_.find(t);
    ids.push_back(it == stoi_.end() ? 0 : it->second);
  }
  if (ids.empty()) ids.push_back(0);  // <UNK>: every sequence has at least one step
  return ids;
}

}  // namespace tgir
