// Gallery index: the folder `tgir index` writes (embeddings.npy, ids.json, index.json) and exact search.
#pragma once

#include <string>
#include <vector>

#include "tgir.h"

namespace tgir {

/// Rows of embeddings with their ids, and the fingerprint of the bundle that computed them.
struct Index {
  size_t dim = 0;
  std::vector<float> embeddings;  // [rows, dim]
  std::vector<std::string> ids;
  std::string fingerprint;

  /// Read an index folder; malformed or inconsistent files -> TGIR_ERR_BAD_INDEX naming the file.
  static Index load(const std::string& folder);

  /// Parse the bytes of a .npy file holding a little-endian float32 C-order 2-D array.
  static std::vector<float> parse_npy(const std::string& bytes, size_t& rows, size_t& cols, const std::string& where);

  size_t size() const { return ids.size(); }

  /// Exact top-k by inner product, best first, equal scores in gallery order.
  void search(const float* queries, size_t count, size_t k, tgir_hit* hits) const;
};

}  // namespace tgir
