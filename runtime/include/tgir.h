/*
 * tgir.h -- the C API of libtgir, the embeddable runtime of tgir (text-guided image retrieval).
 *
 * A shopper gives a reference image and a text change ("make it red"); the runtime turns them into a
 * query embedding and searches a gallery index of catalogue embeddings. Everything model-specific
 * (input size, normalisation, vocabulary, tensor names, precision) is read from the bundle's
 * manifest.json, which `tgir-export build-engine` and `tgir-export aoti` write.
 *
 * Conventions (in the style of sqlite3.h / llama.h):
 *  - Handles are opaque. Each `*_free` accepts NULL and then does nothing.
 *  - Every fallible call returns a tgir_status; on failure tgir_last_error() describes what went wrong
 *    (thread-local; the pointer stays valid until the next tgir call on the same thread). Output
 *    arguments (handles, sizes, info) are written only on success. The exceptions are the bulk `out`
 *    buffers of tgir_encode_images / tgir_encode_queries, filled one max_batch chunk at a time: on
 *    failure their contents are unspecified.
 *  - Pointers passed in are borrowed for the duration of the call unless documented otherwise; the
 *    library keeps no reference to caller memory after a call returns.
 *  - Pointers returned by the library (strings, ids) are owned by the library; their lifetime is stated
 *    at each function.
 *  - Thread safety: a tgir_runtime may be used by one thread at a time (it owns one execution context
 *    and scratch buffers). For more threads, tgir_runtime_clone() gives a handle that shares the loaded
 *    weights read-only and has its own context; clones may run concurrently. A tgir_index is safe to
 *    search from many threads at once, but tgir_index_add must not run concurrently with anything else
 *    on the same index.
 *  - No C++ exception ever crosses this API.
 *
 * Plain C99; C++ callers can include it as is.
 */
#ifndef TGIR_H
#define TGIR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  if defined(TGIR_BUILDING_LIBRARY)
#    define TGIR_API __declspec(dllexport)
#  else
#    define TGIR_API __declspec(dllimport)
#  endif
#else
#  define TGIR_API __attribute__((visibility("default")))
#endif

#define TGIR_VERSION_MAJOR 0
#define TGIR_VERSION_MINOR 4
#define TGIR_VERSION_PATCH 0

/* The bundle manifest schema version this library reads (see tgir/manifest.py). */
#define TGIR_BUNDLE_SCHEMA_VERSION 2

/* ------------------------------------------------------------------------------------------------ */
/* Status codes and errors                                                                           */
/* ------------------------------------------------------------------------------------------------ */

typedef enum tgir_status {
    TGIR_OK = 0,
    TGIR_ERR_INVALID_ARGUMENT = 1, /* NULL where a value is needed, zero-size image, k == 0, ... */
    TGIR_ERR_NOT_FOUND = 2,        /* a file or directory does not exist */
    TGIR_ERR_BAD_BUNDLE = 3,       /* manifest/vocabulary/package malformed, truncated or checksum off */
    TGIR_ERR_VERSION_MISMATCH = 4, /* bundle schema, engine or package built for another version/device */
    TGIR_ERR_UNSUPPORTED = 5,      /* backend not built into this library, or not in the bundle */
    TGIR_ERR_BACKEND = 6,          /* the inference backend failed while running */
    TGIR_ERR_OUT_OF_MEMORY = 7,
    TGIR_ERR_BAD_INDEX = 8,        /* index files malformed, or built by another bundle */
    TGIR_ERR_IO = 9,               /* a read or write failed */
    TGIR_ERR_INTERNAL = 10         /* a bug in libtgir; please report it with tgir_last_error() */
} tgir_status;

/* A static English name for a status ("TGIR_ERR_BAD_BUNDLE"); never NULL. */
TGIR_API const char *tgir_status_string(tgir_status status);

/* The message of the last failed call on this thread ("" if none). Owned by the library; valid until
 * the next tgir call on this thread. */
TGIR_API const char *tgir_last_error(void);

/* The library version, "MAJOR.MINOR.PATCH" followed by the backends compiled in, e.g.
 * "0.4.0 (aoti)". Static string. */
TGIR_API const char *tgir_version(void);

/* ------------------------------------------------------------------------------------------------ */
/* Runtime                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

typedef struct tgir_runtime tgir_runtime;

typedef enum tgir_backend {
    TGIR_BACKEND_AUTO = 0,     /* TensorRT engines if the bundle has them and TensorRT is built in,
                                  else AOTInductor packages */
    TGIR_BACKEND_AOTI = 1,     /* AOTInductor packages (bundle's aoti/ folder), CPU or CUDA */
    TGIR_BACKEND_TENSORRT = 2  /* TensorRT engines (bundle's *.engine files), CUDA */
} tgir_backend;

typedef struct tgir_runtime_options {
    tgir_backend backend;   /* a value outside tgir_backend: TGIR_ERR_INVALID_ARGUMENT */
    int device;             /* -1: CPU (AOTI only); >= 0: that CUDA device. Default -1. With AOTI, a
                               device that does not exist (or any device when libtgir's torch has no
                               CUDA): TGIR_ERR_INVALID_ARGUMENT */
    int num_threads;        /* CPU threads for AOTI on CPU; 0: the library's default. Default 0 */
    int verify_checksums;   /* 1: check every bundle file against the manifest's SHA-256. Default 1.
                               AOTI packages are code and are checked even with 0 (a package of
                               another graph would abort the process when run) */
    int cuda_graphs;        /* 1: capture a CUDA graph per static input shape (TensorRT). Default 0 */
    size_t max_batch;       /* 0: the manifest's maximum batch. Default 0 */
} tgir_runtime_options;

/* The defaults above. */
TGIR_API tgir_runtime_options tgir_runtime_default_options(void);

/* Open a bundle directory.
 *  bundle_dir: borrowed, not empty (TGIR_ERR_INVALID_ARGUMENT). options: borrowed, may be NULL (defaults).
 *  *out receives a new handle, owned by the caller (tgir_runtime_free).
 *  A directory without manifest.json: TGIR_ERR_NOT_FOUND. A malformed manifest (a field of the wrong
 *  type, a text graph of more than 4096 tokens, a compiled package that is not the one the manifest
 *  lists): TGIR_ERR_BAD_BUNDLE. AOTI packages compiled for a CPU vector ISA this CPU
 *  lacks (manifest aoti.cpu_isa: every feature of "avx2", "avx512", "avx512_vnni", "amx_tile" is
 *  checked on x86; an unknown one counts as missing; other architectures are not checked), for
 *  another device kind or another torch release: TGIR_ERR_VERSION_MISMATCH. */
TGIR_API tgir_status tgir_runtime_open(const char *bundle_dir, const tgir_runtime_options *options,
                                       tgir_runtime **out);

/* A second handle on the same loaded model, with its own execution context and scratch buffers, for
 * another thread. Cheap: the weights are shared (reference-counted) and stay alive until the last
 * handle is freed. */
TGIR_API tgir_status tgir_runtime_clone(const tgir_runtime *runtime, tgir_runtime **out);

/* Free a handle; NULL is a no-op. */
TGIR_API void tgir_runtime_free(tgir_runtime *runtime);

/* Facts about an open runtime. Strings are owned by the runtime and live as long as it. */
typedef struct tgir_runtime_info {
    size_t embed_dim;         /* D: length of every embedding */
    size_t image_size;        /* the network's input side in pixels */
    size_t max_batch;         /* the largest batch one call may pass */
    size_t max_text_tokens;   /* texts are cut to this many tokens */
    const char *backend;      /* "aoti" or "tensorrt" */
    const char *device;       /* "cpu", "cuda:0", ... */
    const char *precision;    /* "fp32", "fp16", "int8" */
    const char *model_family; /* "amc", "itma", "tirg" */
    const char *fingerprint;  /* ties a gallery index to this runtime's embeddings */
} tgir_runtime_info;

TGIR_API tgir_status tgir_runtime_get_info(const tgir_runtime *runtime, tgir_runtime_info *info);

/* An RGB image, 8 bits per channel, rows top to bottom, pixels interleaved (HWC). Any size: the runtime
 * resizes and normalises it as the manifest says. */
typedef struct tgir_image {
    const uint8_t *pixels; /* borrowed */
    size_t width;
    size_t height;
    size_t stride;         /* bytes from one row to the next; 0 means width * 3 */
} tgir_image;

/* Images larger than this many pixels are refused (TGIR_ERR_INVALID_ARGUMENT), so a corrupt size
 * cannot make the runtime allocate without bound. */
#define TGIR_MAX_IMAGE_PIXELS ((size_t)1 << 28)

/* Gallery embeddings of `count` images: out receives count * embed_dim floats (L2-normalised),
 * row-major. Batches larger than max_batch are split internally. Every image is checked before any
 * work; a bad one gives TGIR_ERR_INVALID_ARGUMENT with a message starting "images[i]: ". On failure
 * out's contents are unspecified (earlier chunks may have been written). */
TGIR_API tgir_status tgir_encode_images(tgir_runtime *runtime, const tgir_image *images, size_t count,
                                        float *out);

/* The query embedding of one reference image plus one UTF-8 text: out receives embed_dim floats. An
 * empty text is valid (it encodes as the unknown word); invalid UTF-8 bytes are dropped like any other
 * non-ASCII character. */
TGIR_API tgir_status tgir_encode_query(tgir_runtime *runtime, const tgir_image *image, const char *text,
                                       float *out);

/* `count` queries at once (images[i] with texts[i]); out receives count * embed_dim floats. Bad
 * images and failures as for tgir_encode_images (messages "images[i]: ...", out unspecified). */
TGIR_API tgir_status tgir_encode_queries(tgir_runtime *runtime, const tgir_image *images,
                                         const char *const *texts, size_t count, float *out);

/* The token ids of `text` under the bundle's vocabulary and rules, identical to Python's
 * tgir.vocab.Vocabulary.encode: cut at the vocabulary's max_length, and a text with no token gives one
 * id, <UNK> = 0. The runtime feeds the text graph the first tgir_runtime_info.max_text_tokens of them
 * (the graph's fixed length may be shorter than the vocabulary's max_length), as Python's runners do.
 * Writes min(capacity, count) ids to ids (ids may be NULL when capacity is 0, e.g. to ask for the
 * count) and the full count to *length. */
TGIR_API tgir_status tgir_tokenize(const tgir_runtime *runtime, const char *text, int64_t *ids,
                                   size_t capacity, size_t *length);

/* The network input of one image: out receives 3 * image_size * image_size floats, CHW, resized,
 * centre-cropped and normalised as the manifest says (for checking against other runtimes). */
TGIR_API tgir_status tgir_preprocess_image(const tgir_runtime *runtime, const tgir_image *image,
                                           float *out);

/* ------------------------------------------------------------------------------------------------ */
/* Gallery index                                                                                    */
/* ------------------------------------------------------------------------------------------------ */

typedef struct tgir_index tgir_index;

/* One search result: the gallery row, its id string and the inner-product score. `id` is owned by the
 * index and lives until tgir_index_free. */
typedef struct tgir_hit {
    int64_t row;
    float score;
    const char *id;
} tgir_hit;

/* Open an index folder written by `tgir index` (embeddings.npy, ids.json, index.json).
 *  index_dir: not empty (TGIR_ERR_INVALID_ARGUMENT); a folder that does not exist: TGIR_ERR_NOT_FOUND.
 *  A folder lacking one of the files (an unfinished index), files malformed (a field of the wrong
 *  type), inconsistent, or of an embedding size outside [1, TGIR_MAX_INDEX_DIM]: TGIR_ERR_BAD_INDEX.
 *  runtime: borrowed, may be NULL; when given, an index built by another bundle (fingerprint) or
 *  with another embedding size is refused with TGIR_ERR_BAD_INDEX. *out is owned by the caller. */
TGIR_API tgir_status tgir_index_open(const char *index_dir, const tgir_runtime *runtime, tgir_index **out);

/* The largest embedding size an index holds. */
#define TGIR_MAX_INDEX_DIM ((size_t)65536)

/* An empty in-memory index of `dim`-sized embeddings, for galleries embedded by the app itself. dim
 * must be between 1 and TGIR_MAX_INDEX_DIM (else TGIR_ERR_INVALID_ARGUMENT). */
TGIR_API tgir_status tgir_index_create(size_t dim, tgir_index **out);

/* Append `count` embeddings (count * dim floats, copied) with their ids (copied; ids may be NULL, and
 * then the row numbers are used as ids). A count whose rows cannot be addressed in memory, or a NULL
 * id: TGIR_ERR_INVALID_ARGUMENT, and the index is unchanged. */
TGIR_API tgir_status tgir_index_add(tgir_index *index, const float *embeddings, size_t count,
                                    const char *const *ids);

/* Number of rows. */
TGIR_API size_t tgir_index_size(const tgir_index *index);

/* Exact top-k by inner product for `count` queries (count * dim floats). hits receives count * k
 * entries, best first per query, equal scores in gallery order (as tgir's Python search). k must be
 * between 1 and tgir_index_size(). */
TGIR_API tgir_status tgir_index_search(const tgir_index *index, const float *queries, size_t count,
                                       size_t k, tgir_hit *hits);

/* Free an index; NULL is a no-op. */
TGIR_API void tgir_index_free(tgir_index *index);

#ifdef __cplusplus
}
#endif

#endif /* TGIR_H */
