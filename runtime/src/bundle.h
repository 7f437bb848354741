// The bundle a runtime opens: manifest.json read and checked as tgir/manifest.py does.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "image.h"
#include "text.h"

namespace tgir {

/// One graph input or output as the manifest's contract states it; -1 marks the dynamic batch axis.
struct TensorInfo {
  std::string name;
  std::string dtype;  // "float32", "int64", ...
  std::vector<int64_t> shape;
};

/// A graph's contract: its tensors in call order and the batch range.
struct GraphInfo {
  std::string file;
  std::vector<TensorInfo> inputs;
  std::vector<TensorInfo> outputs;
  int64_t batch_min = 1;
  int64_t batch_opt = 1;
  int64_t batch_max = 1;
};

/// A bundle directory with its manifest checked: schema, contract digest, files and checksums.
struct Bundle {
  std::string dir;
  nlohmann::json manifest;
  std::map<std::string, GraphInfo> graphs;
  std::map<std::string, std::string> files;  // relative path -> SHA-256 hex
  Preprocess preprocess;
  Vocabulary vocab;
  size_t text_length = 0;  // the text graph's fixed token count
  std::string family, precision, backend, config_digest;

  /// Read `dir`/manifest.json; `verify` also hashes every listed file. Throws tgir::Error.
  static Bundle open(const std::string& dir, bool verify);

  /// `dir`/`relative` after checking that `relative` stays inside the bundle.
  std::string path(const std::string& relative) const;

  /// What a gallery index built with this bundle (through `backend`) must carry; mirrors
  /// tgir.runtime.index.bundle_fingerprint.
  std::string fingerprint(const std::string& backend) const;

  /// The graph named `name`, or a TGIR_ERR_BAD_BUNDLE error.
  const GraphInfo& graph(const std::string& name) const;
};

/// Python's json.dumps(value, sort_keys=True) with default separators and ensure_ascii, which the
/// manifest's contract digest is taken over.
std::string python_json_dumps(const nlohmann::json& value);

/// SHA-256 hex digest of a byte string / a file (TGIR_ERR_IO when unreadable).
std::string sha256_hex(const std::string& bytes);
std::string sha256_file(const std::string& path);

/// The whole file, or TGIR_ERR_NOT_FOUND / TGIR_ERR_IO naming it.
std::string read_file(const std::string& path);

}  // namespace tgir
