// What a tgir_runtime does: images and texts -> network inputs -> graphs -> embeddings.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "bundle.h"
#include "index.h"
#include "tgir.h"

namespace tgir {

class Pipeline {
 public:
  /// Open a bundle with the backend the options choose. Throws tgir::Error.
  static std::unique_ptr<Pipeline> open(const std::string& dir, const tgir_runtime_options& options);

  /// Same bundle and weights, own backend context and scratch buffers.
  std::unique_ptr<Pipeline> clone() const;

  tgir_runtime_info info() const;
  std::vector<int64_t> tokenize(const char* text) const;
  void preprocess(const tgir_image& image, float* out) const;
  void encode_images(const tgir_image* images, size_t count, float* out);
  /// `indexed`: name the offending image as images[i] in errors (the bulk API; not tgir_encode_query).
  void encode_queries(const tgir_image* images, const char* const* texts, size_t count, float* out,
                      bool indexed = true);

  /// Refuse an index built by another bundle or backend, or of another embedding size.
  void require_index(const Index& index, const std::string& where) const;

 private:
  Pipeline(std::shared_ptr<const Bundle> bundle, std::unique_ptr<Backend> backend, size_t max_batch);
  /// Refuse a bad image with TGIR_ERR_INVALID_ARGUMENT; `label` prefixes the message.
  void check_image(const tgir_image& image, const std::string& label) const;
  /// All images checked before any work; with `indexed`, messages start "images[i]: ".
  void check_images(const tgir_image* images, size_t count, bool indexed) const;
  /// image_encoder on images[0..count): gallery [count, D] and tokens [count, N, D].
  void run_images(const tgir_image* images, size_t count, Tensor& gallery, Tensor& tokens);
  void run_texts(const char* const* texts, size_t count, std::vector<Tensor>& features);

  std::shared_ptr<const Bundle> bundle_;
  std::unique_ptr<Backend> backend_;
  size_t max_batch_;
  size_t embed_dim_;
  std::string device_, precision_, fingerprint_;
  Tensor pixels_, ids_, lengths_;  // scratch inputs, reused across calls
};

}  // namespace tgir
