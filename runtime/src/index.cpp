// Gallery index files (runtime/index.py writes them) and exact inner-product search.
#include "index.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "bundle.h"
#include "error.h"

namespace tgir {
namespace {

constexpr const char* kFormat = "tgir-index";
constexpr int kVersion = 1;

[[noreturn]] void bad(const std::string& where, const std::string& why) { fail(TGIR_ERR_BAD_INDEX, where + ": " + why); }

/// Value of `'key': ` in a .npy header dict (numpy writes a Python literal, e.g.
/// "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }").
std::string header_value(const std::string& header, const std::string& key, const std::string& where) {
  const std::string needle = "'" + key + "':";
  size_t at = header.find(needle);
  if (at == std::string::npos) bad(where, "not a .npy array (no '" + key + "' in its header)");
  at += needle.size();
  while (at < header.size() && header[at] == ' ') ++at;
  size_t end = header[at] == '(' ? header.find(')', at) + 1 : header.find_first_of(",}", at);
  if (end == std::string::npos || end == 0 || end > header.size()) bad(where, "malformed .npy header");
  return header.substr(at, end - at);
}

std::vector<size_t> parse_shape(const std::string& text, const std::string& where) {
  std::vector<size_t> dims;
  size_t i = 1;  // after '('
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == ',')) ++i;
    if (i >= text.size() || text[i] == ')') break;
    if (text[i] < '0' || text[i] > '9') bad(where, "malformed .npy shape " + text);
    size_t v = 0;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
      if (v > (SIZE_MAX - 9) / 10) bad(where, "a .npy dimension is too large");
      v = v * 10 + static_cast<size_t>(text[i] - '0');
    }
    dims.push_back(v);
  }
  return dims;
}

/// A missing folder is TGIR_ERR_NOT_FOUND (as for a bundle); a file in its place is no index.
void require_folder(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail(TGIR_ERR_NOT_FOUND, path + ": no such index folder");
  if (!S_ISDIR(st.st_mode)) bad(path, "not a folder (an index is the folder `tgir index` writes)");
}

/// Inner product with eight independent partial sums: a fixed summation order that compilers turn
/// into SIMD without -ffast-math (one running sum would serialise on the add latency).
float dot(const float* a, const float* b, size_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (size_t l = 0; l < 8; ++l) acc[l] += a[d + l] * b[d + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; d < n; ++d) s += a[d] * b[d];
  return s;
}

}  // namespace

std::vector<float> Index::parse_npy(const std::string& bytes, size_t& rows, size_t& cols, const std::string& where) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0) bad(where, "not a .npy file");
  const auto major = static_cast<unsigned char>(bytes[6]);
  size_t header_len, start;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    start = 10;
  } else if ((major == 2 || major == 3) && bytes.size() >= 12) {
    header_len = 0;
    for (int b = 3; b >= 0; --b) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + b]);
    start = 12;
  } else {
    bad(where, ".npy format version " + std::to_string(major) + " is not supported");
  }
  if (header_len > bytes.size() - start) bad(where, "truncated .npy header");
  const std::string header = bytes.substr(start, header_len);
  if (header_value(header, "descr", where) != "'<f4'") bad(where, "embeddings must be float32 ('<f4')");
  if (header_value(header, "fortran_order", where) != "False") bad(where, "embeddings must be in C order");
  auto shape = parse_shape(header_value(header, "shape", where), where);
  if (shape.size() != 2) bad(where, "embeddings must be a 2-D array [rows, dim]");
  rows = shape[0];
  cols = shape[1];
  const size_t data_at = start + header_len;
  if (cols != 0 && rows > (SIZE_MAX / 4) / cols) bad(where, "array too large");
  if (bytes.size() - data_at != rows * cols * 4)
    bad(where, "holds " + std::to_string(bytes.size() - data_at) + " data bytes; its header promises " +
                   std::to_string(rows * cols * 4) + " (truncated file?)");
  std::vector<float> out(rows * cols);
  if (!out.empty()) std::memcpy(out.data(), bytes.data() + data_at, out.size() * 4);
  return out;
}

namespace {

/// A member of index.json of the wanted type, or TGIR_ERR_BAD_INDEX naming it (nlohmann's own
/// type_error would surface as an internal error).
const nlohmann::json& meta_member(const nlohmann::json& meta, const char* key, bool (nlohmann::json::*is_type)() const,
                                  const char* type, const std::string& where) {
  if (!meta.contains(key)) bad(where, std::string("no '") + key + "'");
  const auto& v = meta.at(key);
  if (!(v.*is_type)()) bad(where, std::string("'") + key + "' must be " + type + ", got " + v.dump());
  return v;
}

nlohmann::json parse_index_json(const std::string& text, const std::string& where) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& err) {
    bad(where, std::string("unreadable index (") + err.what() + ")");
  }
}

}  // namespace

Index Index::load(const std::string& folder) {
  Index idx;
  const std::string meta_path = folder + "/index.json", ids_path = folder + "/ids.json";
  const std::string emb_path = folder + "/embeddings.npy";
  require_folder(folder);
  auto read = [&](const std::string& path) {
    try {
      return read_file(path);
    } catch (const Error& err) {  // the folder exists: a missing file means an unfinished index
      bad(folder, std::string("not a finished tgir index (") + err.what() + "); build it with `tgir index`");
    }
  };
  const nlohmann::json meta = parse_index_json(read(meta_path), meta_path);
  const nlohmann::json ids = parse_index_json(read(ids_path), ids_path);
  if (!meta.is_object()) bad(meta_path, "must be a JSON object");
  const auto& format = meta_member(meta, "format", &nlohmann::json::is_string, "a string", meta_path);
  const auto& version = meta_member(meta, "version", &nlohmann::json::is_number_integer, "an integer", meta_path);
  if (format != kFormat || version != kVersion) bad(folder, "not a tgir index of version " + std::to_string(kVersion));
  idx.fingerprint = meta_member(meta, "fingerprint", &nlohmann::json::is_string, "a string", meta_path).get<std::string>();
  if (!ids.is_array()) bad(ids_path, "must be a list of strings");
  for (const auto& id : ids) {
    if (!id.is_string()) bad(ids_path, "must be a list of strings");
    idx.ids.push_back(id.get<std::string>());
  }
  size_t rows = 0;
  idx.embeddings = parse_npy(read(emb_path), rows, idx.dim, emb_path);
  if (idx.dim == 0 || idx.dim > TGIR_MAX_INDEX_DIM)  // as tgir_index_create refuses them
    bad(emb_path, "embedding size " + std::to_string(idx.dim) + " is not between 1 and TGIR_MAX_INDEX_DIM (" +
                      std::to_string(TGIR_MAX_INDEX_DIM) + ")");
  const auto count = meta.contains("count") ? meta.at("count") : nlohmann::json();
  const auto dim = meta.contains("dim") ? meta.at("dim") : nlohmann::json();
  if (rows != idx.ids.size() || count != rows || dim != idx.dim)
    bad(folder, "index files disagree (ids, embeddings, index.json); rebuild it");
  return idx;
}

void Index::search(const float* queries, size_t count, size_t k, tgir_hit* hits) const {
  const size_t n = size();
  std::vector<float> scores(n);
  std::vector<int64_t> order(n);
  for (size_t q = 0; q < count; ++q) {
    const float* query = queries + q * dim;
    for (size_t r = 0; r < n; ++r) scores[r] = dot(query, embeddings.data() + r * dim, dim);
    std::iota(order.begin(), order.end(), 0);
    // Best score first; equal scores keep gallery order (the row number breaks the tie).
    auto better = [&](int64_t a, int64_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); };
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(), better);
    for (size_t j = 0; j < k; ++j) {
      const int64_t r = order[j];
      hits[q * k + j] = tgir_hit{r, scores[r], ids[static_cast<size_t>(r)].c_str()};
    }
  }
}

}  // namespace tgir
