// The extern "C" surface of libtgir: argument checks, the encode pipeline, errors as status codes.
// Every entry point catches everything: no exception crosses the C boundary.
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>
#include <algorithm>

#include "backend.h"
#include "bundle.h"
#include "error.h"
#include "index.h"
#include "pipeline.h"
#include "tgir.h"

using tgir::Error;
using tgir::fail;

namespace {

thread_local std::string g_last_error;

tgir_status set_error(tgir_status status, const std::string& message) {
  g_last_error = message;
  return status;
}

/// Runs `body`, turning every exception into a status and a thread-local message.
template <typename Body>
tgir_status guarded(Body&& body) noexcept {
  try {
    body();
    g_last_error.clear();
    return TGIR_OK;
  } catch (const Error& err) {
    return set_error(err.status(), err.what());
  } catch (const std::bad_alloc&) {
    return set_error(TGIR_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& err) {
    return set_error(TGIR_ERR_INTERNAL, std::string("internal error: ") + err.what());
  } catch (...) {
    return set_error(TGIR_ERR_INTERNAL, "internal error: unknown exception");
  }
}

void require(bool ok, const char* what) {
  if (!ok) fail(TGIR_ERR_INVALID_ARGUMENT, what);
}

}  // namespace

struct tgir_runtime {
  std::unique_ptr<tgir::Pipeline> pipeline;
};

struct tgir_index {
  tgir::Index index;
};

extern "C" {

const char* tgir_status_string(tgir_status status) {
  switch (status) {
    case TGIR_OK: return "TGIR_OK";
    case TGIR_ERR_INVALID_ARGUMENT: return "TGIR_ERR_INVALID_ARGUMENT";
    case TGIR_ERR_NOT_FOUND: return "TGIR_ERR_NOT_FOUND";
    case TGIR_ERR_BAD_BUNDLE: return "TGIR_ERR_BAD_BUNDLE";
    case TGIR_ERR_VERSION_MISMATCH: return "TGIR_ERR_VERSION_MISMATCH";
    case TGIR_ERR_UNSUPPORTED: return "TGIR_ERR_UNSUPPORTED";
    case TGIR_ERR_BACKEND: return "TGIR_ERR_BACKEND";
    case TGIR_ERR_OUT_OF_MEMORY: return "TGIR_ERR_OUT_OF_MEMORY";
    case TGIR_ERR_BAD_INDEX: return "TGIR_ERR_BAD_INDEX";
    case TGIR_ERR_IO: return "TGIR_ERR_IO";
    case TGIR_ERR_INTERNAL: return "TGIR_ERR_INTERNAL";
  }
  return "TGIR_ERR_UNKNOWN";
}

const char* tgir_last_error(void) { return g_last_error.c_str(); }

const char* tgir_version(void) {
  static const std::string version = [] {
    std::string v = std::to_string(TGIR_VERSION_MAJOR) + "." + std::to_string(TGIR_VERSION_MINOR) + "." +
                    std::to_string(TGIR_VERSION_PATCH) + " (";
    std::string backends;
    if (tgir::aoti_available()) backends += "aoti";
    if (tgir::tensorrt_available()) backends += std::string(backends.empty() ? "" : ", ") + "tensorrt";
    return v + (backends.empty() ? "no backend" : backends) + ")";
  }();
  return version.c_str();
}

tgir_runtime_options tgir_runtime_default_options(void) {
  tgir_runtime_options o;
  o.backend = TGIR_BACKEND_AUTO;
  o.device = -1;
  o.num_threads = 0;
  o.verify_checksums = 1;
  o.cuda_graphs = 0;
  o.max_batch = 0;
  return o;
}

tgir_status tgir_runtime_open(const char* bundle_dir, const tgir_runtime_options* options, tgir_runtime** out) {
  return guarded([&] {
    require(bundle_dir && out, "tgir_runtime_open: bundle_dir and out must not be NULL");
    require(*bundle_dir, "tgir_runtime_open: bundle_dir is empty");
    const tgir_runtime_options opts = options ? *options : tgir_runtime_default_options();
    auto rt = std::make_unique<tgir_runtime>();
    rt->pipeline = tgir::Pipeline::open(bundle_dir, opts);
    *out = rt.release();
  });
}

tgir_status tgir_runtime_clone(const tgir_runtime* runtime, tgir_runtime** out) {
  return guarded([&] {
    require(runtime && out, "tgir_runtime_clone: runtime and out must not be NULL");
    auto rt = std::make_unique<tgir_runtime>();
    rt->pipeline = runtime->pipeline->clone();
    *out = rt.release();
  });
}

void tgir_runtime_free(tgir_runtime* runtime) { delete runtime; }

tgir_status tgir_runtime_get_info(const tgir_runtime* runtime, tgir_runtime_info* info) {
  return guarded([&] {
    require(runtime && info, "tgir_runtime_get_info: runtime and info must not be NULL");
    *info = runtime->pipeline->info();
  });
}

tgir_status tgir_encode_images(tgir_runtime* runtime, const tgir_image* images, size_t count, float* out) {
  return guarded([&] {
    require(runtime && (images || count == 0) && (out || count == 0),
            "tgir_encode_images: runtime, images and out must not be NULL");
    runtime->pipeline->encode_images(images, count, out);
  });
}

tgir_status tgir_encode_query(tgir_runtime* runtime, const tgir_image* image, const char* text, float* out) {
  return guarded([&] {
    require(runtime && image && text && out, "tgir_encode_query: runtime, image, text and out must not be NULL");
    runtime->pipeline->encode_queries(image, &text, 1, out, false);
  });
}

tgir_status tgir_encode_queries(tgir_runtime* runtime, const tgir_image* images, const char* const* texts,
                                size_t count, float* out) {
  return guarded([&] {
    require(runtime && ((images && texts && out) || count == 0),
            "tgir_encode_queries: runtime, images, texts and out must not be NULL");
    for (size_t i = 0; i < count; ++i) require(texts[i], "tgir_encode_queries: a text is NULL");
    runtime->pipeline->encode_queries(images, texts, count, out);
  });
}

tgir_status tgir_tokenize(const tgir_runtime* runtime, const char* text, int64_t* ids, size_t capacity,
                          size_t* length) {
  return guarded([&] {
    require(runtime && text && length && (ids || capacity == 0),
            "tgir_tokenize: runtime, text and length must not be NULL (ids may be NULL only with capacity 0)");
    auto tokens = runtime->pipeline->tokenize(text);
    const size_t n = std::min(capacity, tokens.size());
    if (n) std::memcpy(ids, tokens.data(), n * sizeof(int64_t));  // ids may be NULL when capacity is 0
    *length = tokens.size();
  });
}

tgir_status tgir_preprocess_image(const tgir_runtime* runtime, const tgir_image* image, float* out) {
  return guarded([&] {
    require(runtime && image && out, "tgir_preprocess_image: runtime, image and out must not be NULL");
    runtime->pipeline->preprocess(*image, out);
  });
}

tgir_status tgir_index_open(const char* index_dir, const tgir_runtime* runtime, tgir_index** out) {
  return guarded([&] {
    require(index_dir && out, "tgir_index_open: index_dir and out must not be NULL");
    require(*index_dir, "tgir_index_open: index_dir is empty");
    auto idx = std::make_unique<tgir_index>();
    idx->index = tgir::Index::load(index_dir);
    if (runtime) runtime->pipeline->require_index(idx->index, index_dir);
    *out = idx.release();
  });
}

tgir_status tgir_index_create(size_t dim, tgir_index** out) {
  return guarded([&] {
    require(out, "tgir_index_create: out must not be NULL");
    if (dim == 0 || dim > TGIR_MAX_INDEX_DIM)
      fail(TGIR_ERR_INVALID_ARGUMENT, "tgir_index_create: dim must be between 1 and TGIR_MAX_INDEX_DIM (" +
                                          std::to_string(TGIR_MAX_INDEX_DIM) + "), got " + std::to_string(dim));
    auto idx = std::make_unique<tgir_index>();
    idx->index.dim = dim;
    *out = idx.release();
  });
}

tgir_status tgir_index_add(tgir_index* index, const float* embeddings, size_t count, const char* const* ids) {
  return guarded([&] {
    require(index && (embeddings || count == 0), "tgir_index_add: index and embeddings must not be NULL");
    auto& idx = index->index;
    // count * dim floats must be addressable, or the copy below would read a wrapped (short) range.
    const size_t room = PTRDIFF_MAX / sizeof(float) / idx.dim - idx.embeddings.size() / idx.dim;
    if (count > room)
      fail(TGIR_ERR_INVALID_ARGUMENT, "tgir_index_add: " + std::to_string(count) + " rows of " +
                                          std::to_string(idx.dim) + " floats do not fit in memory");
    for (size_t i = 0; ids && i < count; ++i) require(ids[i], "tgir_index_add: an id is NULL");
    std::vector<std::string> names;  // built first, so a failure leaves the index unchanged
    for (size_t i = 0; i < count; ++i) names.emplace_back(ids ? ids[i] : std::to_string(idx.ids.size() + i));
    idx.embeddings.reserve(idx.embeddings.size() + count * idx.dim);
    idx.ids.reserve(idx.ids.size() + count);
    idx.embeddings.insert(idx.embeddings.end(), embeddings, embeddings + count * idx.dim);
    for (auto& name : names) idx.ids.push_back(std::move(name));
  });
}

size_t tgir_index_size(const tgir_index* index) { return index ? index->index.size() : 0; }

tgir_status tgir_index_search(const tgir_index* index, const float* queries, size_t count, size_t k,
                              tgir_hit* hits) {
  return guarded([&] {
    require(index && ((queries && hits) || count == 0), "tgir_index_search: index, queries and hits must not be NULL");
    const size_t n = index->index.size();
    if (k < 1 || k > n)
      fail(TGIR_ERR_INVALID_ARGUMENT, "tgir_index_search: k must be between 1 and the gallery size " +
                                          std::to_string(n) + ", got " + std::to_string(k));
    index->index.search(queries, count, k, hits);
  });
}

void tgir_index_free(tgir_index* index) { delete index; }

}  // extern "C"
