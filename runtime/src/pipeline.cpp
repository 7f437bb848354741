// The encode pipeline of a runtime, backend-independent: it reads the manifest's contract for tensor
// names and sizes, prepares inputs (image preprocessing, tokenization) and splits large batches.
#include "pipeline.h"

#include <algorithm>
#include <cstring>

#include "error.h"

namespace tgir {
namespace {

size_t output_index(const GraphInfo& g, const std::string& name, const std::string& graph) {
  for (size_t i = 0; i < g.outputs.size(); ++i)
    if (g.outputs[i].name == name) return i;
  fail(TGIR_ERR_BAD_BUNDLE, "manifest: graph " + graph + " has no output '" + name + "'");
}

/// The n rows of a [n, dim] float output into `dst`, after checking the backend gave that shape (a
/// mismatched package must not write past the caller's buffer).
void copy_rows(const Tensor& src, size_t n, size_t dim, float* dst) {
  if (src.dtype != "float32" || src.shape.size() != 2 || static_cast<size_t>(src.shape[0]) != n ||
      static_cast<size_t>(src.shape[1]) != dim)
    fail(TGIR_ERR_BACKEND, "a graph returned an embedding of another shape than the manifest's [" + std::to_string(n) +
                               ", " + std::to_string(dim) + "]");
  std::memcpy(dst, src.data<float>(), n * dim * sizeof(float));
}

/// The options' backend as a plain int: a C caller may store any value in the enum field, and loading
/// one outside the enumerators through the enum type is undefined behaviour in C++.
int backend_value(const tgir_runtime_options& o) {
  static_assert(sizeof(o.backend) == sizeof(int), "tgir_backend is int-sized");
  int value = 0;
  std::memcpy(&value, &o.backend, sizeof value);
  return value;
}

std::unique_ptr<Backend> make_backend(const Bundle& bundle, const tgir_runtime_options& o) {
  switch (backend_value(o)) {
    case TGIR_BACKEND_AOTI: return make_aoti_backend(bundle, o);
    case TGIR_BACKEND_TENSORRT: return make_tensorrt_backend(bundle, o);
    case TGIR_BACKEND_AUTO:
      if (tensorrt_available() && bundle.backend == "tensorrt" && o.device >= 0) return make_tensorrt_backend(bundle, o);
      return make_aoti_backend(bundle, o);
  }
  fail(TGIR_ERR_INTERNAL, "make_backend: backend not checked by Pipeline::open");
}

}  // namespace

Pipeline::Pipeline(std::shared_ptr<const Bundle> bundle, std::unique_ptr<Backend> backend, size_t max_batch)
    : bundle_(std::move(bundle)), backend_(std::move(backend)), max_batch_(max_batch) {
  const auto& g = bundle_->graph("image_encoder");
  const auto& gallery = g.outputs[output_index(g, "gallery", "image_encoder")];
  if (gallery.shape.size() != 2 || gallery.shape[1] <= 0)
    fail(TGIR_ERR_BAD_BUNDLE, bundle_->dir + "/manifest.json: gallery output must be [batch, D]");
  embed_dim_ = static_cast<size_t>(gallery.shape[1]);
  device_ = backend_->device();
  precision_ = backend_->precision();
  fingerprint_ = bundle_->fingerprint(backend_->name());
}

std::unique_ptr<Pipeline> Pipeline::open(const std::string& dir, const tgir_runtime_options& o) {
  if (o.device < -1) fail(TGIR_ERR_INVALID_ARGUMENT, "tgir_runtime_open: device must be -1 (CPU) or a CUDA index");
  if (o.num_threads < 0) fail(TGIR_ERR_INVALID_ARGUMENT, "tgir_runtime_open: num_threads must be >= 0");
  const int kind = backend_value(o);  // checked before the bundle is read: the caller's mistake comes first
  if (kind < TGIR_BACKEND_AUTO || kind > TGIR_BACKEND_TENSORRT)
    fail(TGIR_ERR_INVALID_ARGUMENT, "tgir_runtime_open: unknown backend " + std::to_string(kind) +
                                        "; valid: TGIR_BACKEND_AUTO, TGIR_BACKEND_AOTI, TGIR_BACKEND_TENSORRT");
  auto bundle = std::make_shared<Bundle>(Bundle::open(dir, o.verify_checksums != 0));
  size_t limit = SIZE_MAX;
  for (const auto& kv : bundle->graphs) limit = std::min(limit, static_cast<size_t>(kv.second.batch_max));
  if (o.max_batch > limit)
    fail(TGIR_ERR_INVALID_ARGUMENT, "tgir_runtime_open: max_batch " + std::to_string(o.max_batch) +
                                        " exceeds the bundle's maximum batch " + std::to_string(limit));
  auto backend = make_backend(*bundle, o);
  return std::unique_ptr<Pipeline>(new Pipeline(bundle, std::move(backend), o.max_batch ? o.max_batch : limit));
}

std::unique_ptr<Pipeline> Pipeline::clone() const {
  return std::unique_ptr<Pipeline>(new Pipeline(bundle_, backend_->clone(), max_batch_));
}

tgir_runtime_info Pipeline::info() const {
  tgir_runtime_info i;
  i.embed_dim = embed_dim_;
  i.image_size = bundle_->preprocess.size;
  i.max_batch = max_batch_;
  i.max_text_tokens = std::min(bundle_->text_length, bundle_->vocab.max_length());
  i.backend = backend_->name() == "aoti" ? "aoti" : "tensorrt";
  i.device = device_.c_str();
  i.precision = precision_.c_str();
  i.model_family = bundle_->family.c_str();
  i.fingerprint = fingerprint_.c_str();
  return i;
}

std::vector<int64_t> Pipeline::tokenize(const char* text) const { return bundle_->vocab.encode(text); }

void Pipeline::check_image(const tgir_image& im, const std::string& label) const {
  auto refuse = [&](const std::string& why) { fail(TGIR_ERR_INVALID_ARGUMENT, label + why); };
  if (!im.pixels) refuse("image pixels must not be NULL");
  if (im.width == 0 || im.height == 0)
    refuse("image is empty (" + std::to_string(im.width) + "x" + std::to_string(im.height) + ")");
  if (im.width > TGIR_MAX_IMAGE_PIXELS / im.height)
    refuse("image of " + std::to_string(im.width) + "x" + std::to_string(im.height) +
           " pixels exceeds TGIR_MAX_IMAGE_PIXELS");
  if (im.stride != 0 && im.stride < im.width * 3)
    refuse("image stride " + std::to_string(im.stride) + " is smaller than width * 3");
}

void Pipeline::check_images(const tgir_image* images, size_t count, bool indexed) const {
  for (size_t i = 0; i < count; ++i) check_image(images[i], indexed ? "images[" + std::to_string(i) + "]: " : "");
}

void Pipeline::preprocess(const tgir_image& im, float* out) const {
  check_image(im, "");
  preprocess_rgb(bundle_->preprocess, im.pixels, im.width, im.height, im.stride ? im.stride : im.width * 3, out);
}

void Pipeline::run_images(const tgir_image* images, size_t count, Tensor& gallery, Tensor& tokens) {
  const int64_t s = static_cast<int64_t>(bundle_->preprocess.size);
  pixels_.resize("float32", {static_cast<int64_t>(count), 3, s, s});
  for (size_t i = 0; i < count; ++i)  // checked by the caller
    preprocess_rgb(bundle_->preprocess, images[i].pixels, images[i].width, images[i].height,
                   images[i].stride ? images[i].stride : images[i].width * 3, pixels_.data<float>() + i * 3 * s * s);
  std::vector<Tensor> outputs;
  backend_->run("image_encoder", {&pixels_}, outputs);
  const auto& g = bundle_->graph("image_encoder");
  gallery = std::move(outputs.at(output_index(g, "gallery", "image_encoder")));
  tokens = std::move(outputs.at(output_index(g, "tokens", "image_encoder")));
}

void Pipeline::run_texts(const char* const* texts, size_t count, std::vector<Tensor>& features) {
  const size_t len = bundle_->text_length;
  ids_.resize("int64", {static_cast<int64_t>(count), static_cast<int64_t>(len)});
  lengths_.resize("int64", {static_cast<int64_t>(count)});
  std::fill(ids_.bytes.begin(), ids_.bytes.end(), 0);  // padded with <UNK> = 0, as tgir.vocab does
  for (size_t i = 0; i < count; ++i) {
    auto seq = bundle_->vocab.encode(texts[i]);
    seq.resize(std::min(seq.size(), len));
    std::copy(seq.begin(), seq.end(), ids_.data<int64_t>() + i * len);
    lengths_.data<int64_t>()[i] = static_cast<int64_t>(seq.size());
  }
  backend_->run("text_encoder", {&ids_, &lengths_}, features);
}

void Pipeline::encode_images(const tgir_image* images, size_t count, float* out) {
  check_images(images, count, true);  // all checked before any work
  Tensor gallery, tokens;
  for (size_t start = 0; start < count; start += max_batch_) {
    const size_t n = std::min(max_batch_, count - start);
    run_images(images + start, n, gallery, tokens);
    copy_rows(gallery, n, embed_dim_, out + start * embed_dim_);
  }
}

void Pipeline::encode_queries(const tgir_image* images, const char* const* texts, size_t count, float* out,
                              bool indexed) {
  check_images(images, count, indexed);
  const auto& text_graph = bundle_->graph("text_encoder");
  const auto& composer = bundle_->graph("composer");
  Tensor gallery, tokens;
  std::vector<Tensor> text, query;
  for (size_t start = 0; start < count; start += max_batch_) {
    const size_t n = std::min(max_batch_, count - start);
    run_images(images + start, n, gallery, tokens);
    run_texts(texts + start, n, text);
    std::vector<const Tensor*> inputs;  // the composer's inputs by name: image tokens, then text outputs
    for (const auto& spec : composer.inputs) {
      if (spec.name == "tokens") {
        inputs.push_back(&tokens);
        continue;
      }
      inputs.push_back(&text.at(output_index(text_graph, spec.name, "text_encoder")));
    }
    backend_->run("composer", inputs, query);
    copy_rows(query.at(0), n, embed_dim_, out + start * embed_dim_);
  }
}

void Pipeline::require_index(const Index& index, const std::string& where) const {
  if (index.dim != embed_dim_)
    fail(TGIR_ERR_BAD_INDEX, where + ": embeddings of size " + std::to_string(index.dim) + "; this runtime's are " +
                                 std::to_string(embed_dim_));
  if (index.fingerprint != fingerprint_)  // the fingerprint names the bundle and the graphs' precision as run here
    fail(TGIR_ERR_BAD_INDEX, where + ": the index was built by another bundle or precision (fingerprint " +
                                 index.fingerprint + ", this runtime's is " + fingerprint_ +
                                 "); rebuild it for this runtime with `tgir index --bundle BUNDLE --backend c`");
}

}  // namespace tgir
