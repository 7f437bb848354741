/* The runtime on a real bundle (TGIR_TEST_BUNDLE, a bundle with AOTInductor packages): encoding,
 * bad inputs, batching, clones used from two threads, and the broken copies of the bundle that
 * make_fixtures.py wrote into the folder given as argv[1]. Exit 77 (skipped) without a bundle. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "tgir.h"

static uint8_t *make_image(size_t w, size_t h, unsigned seed) {
  uint8_t *p = malloc(w * h * 3);
  for (size_t i = 0; i < w * h * 3; ++i) p[i] = (uint8_t)((i * 2654435761u + seed * 40503u) >> 13);
  return p;
}

static float norm(const float *v, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += (double)v[i] * v[i];
  return (float)sqrt(s);
}

static float max_diff(const float *a, const float *b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = fmaxf(m, fabsf(a[i] - b[i]));
  return m;
}

typedef struct { tgir_runtime *rt; tgir_image im; float *out; tgir_status status; } job;

static void *run_job(void *arg) {
  job *j = arg;
  for (int i = 0; i < 3; ++i) j->status |= tgir_encode_query(j->rt, &j->im, "make it red", j->out);
  return NULL;
}

static void test_inputs(tgir_runtime *rt, size_t d) {
  float *q = calloc(d, sizeof(float));
  uint8_t *px = make_image(64, 48, 1);
  tgir_image im = {px, 64, 48, 0};
  CHECK_STATUS(tgir_encode_query(rt, &im, "make the red circle big", q), TGIR_OK);
  CHECK(fabsf(norm(q, d) - 1.0f) < 1e-3f);
  CHECK_STATUS(tgir_encode_query(rt, &im, "", q), TGIR_OK); /* empty text is valid */
  CHECK_STATUS(tgir_encode_query(rt, &im, "\xff\xfe unknownword \xc3", q), TGIR_OK);
  tgir_image empty = {px, 0, 48, 0};
  CHECK_STATUS(tgir_encode_query(rt, &empty, "red", q), TGIR_ERR_INVALID_ARGUMENT);
  CHECK(strstr(tgir_last_error(), "empty") != NULL);
  tgir_image null_px = {NULL, 4, 4, 0};
  CHECK_STATUS(tgir_encode_query(rt, &null_px, "red", q), TGIR_ERR_INVALID_ARGUMENT);
  tgir_image huge = {px, (size_t)1 << 20, (size_t)1 << 20, 0}; /* never read: refused by size */
  CHECK_STATUS(tgir_encode_query(rt, &huge, "red", q), TGIR_ERR_INVALID_ARGUMENT);
  tgir_image narrow = {px, 64, 48, 10};
  CHECK_STATUS(tgir_encode_query(rt, &narrow, "red", q), TGIR_ERR_INVALID_ARGUMENT);
  tgir_image pair[2] = {im, empty}; /* a batch names the bad image */
  float *two = calloc(2 * d, sizeof(float));
  CHECK_STATUS(tgir_encode_images(rt, pair, 2, two), TGIR_ERR_INVALID_ARGUMENT);
  CHECK(strncmp(tgir_last_error(), "images[1]: image is empty (0x48)", 32) == 0);
  const char *texts[2] = {"red", "blue"};
  CHECK_STATUS(tgir_encode_queries(rt, pair, texts, 2, two), TGIR_ERR_INVALID_ARGUMENT);
  CHECK(strncmp(tgir_last_error(), "images[1]: ", 11) == 0);
  free(two);
  uint8_t *big = make_image(5472, 3648, 2); /* 20 megapixels */
  tgir_image big_im = {big, 5472, 3648, 0};
  CHECK_STATUS(tgir_encode_images(rt, &big_im, 1, q), TGIR_OK);
  CHECK(fabsf(norm(q, d) - 1.0f) < 1e-3f);
  free(big);
  free(px);
  free(q);
}

static void test_batching(tgir_runtime *rt, size_t d, size_t max_batch) {
  size_t n = max_batch + 1; /* one call split into two batches */
  tgir_image *ims = calloc(n, sizeof(tgir_image));
  const char **texts = calloc(n, sizeof(char *));
  for (size_t i = 0; i < n; ++i) {
    ims[i] = (tgir_image){make_image(40 + i, 30, (unsigned)i), 40 + i, 30, 0};
    texts[i] = i % 2 ? "make it blue" : "add a small circle";
  }
  float *all = malloc(n * d * sizeof(float)), *one = malloc(d * sizeof(float));
  CHECK_STATUS(tgir_encode_queries(rt, ims, texts, n, all), TGIR_OK);
  for (size_t i = 0; i < n; i += max_batch) {
    CHECK_STATUS(tgir_encode_query(rt, &ims[i], texts[i], one), TGIR_OK);
    CHECK(max_diff(one, all + i * d, d) < 1e-4f);
  }
  CHECK_STATUS(tgir_encode_images(rt, ims, n, all), TGIR_OK);
  CHECK(fabsf(norm(all + (n - 1) * d, d) - 1.0f) < 1e-3f);
  for (size_t i = 0; i < n; ++i) free((void *)ims[i].pixels);
  free(ims), free(texts), free(all), free(one);
}

static void test_threads(tgir_runtime *rt, size_t d) {
  tgir_runtime *copy = NULL;
  CHECK_STATUS(tgir_runtime_clone(rt, &copy), TGIR_OK);
  uint8_t *px = make_image(64, 64, 3);
  job a = {rt, {px, 64, 64, 0}, calloc(d, sizeof(float)), TGIR_OK};
  job b = {copy, {px, 64, 64, 0}, calloc(d, sizeof(float)), TGIR_OK};
  pthread_t ta, tb;
  pthread_create(&ta, NULL, run_job, &a);
  pthread_create(&tb, NULL, run_job, &b);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  CHECK(a.status == TGIR_OK && b.status == TGIR_OK);
  CHECK(max_diff(a.out, b.out, d) == 0.0f);
  tgir_runtime_free(copy);
  free(a.out), free(b.out), free(px);
}

/* Open `fixtures`/`name` and expect `want` with `text` in the message (a NULL text: not checked). */
static void expect_open(const char *fixtures, const char *name, const tgir_runtime_options *o, tgir_status want,
                        const char *text) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/%s", fixtures, name);
  tgir_runtime *rt = NULL;
  tgir_status got = tgir_runtime_open(dir, o, &rt);
  if (got != want || (text && !strstr(tgir_last_error(), text)))
    fprintf(stderr, "%s: got %s (%s), want %s with \"%s\"\n", name, tgir_status_string(got), tgir_last_error(),
            tgir_status_string(want), text ? text : "");
  CHECK(got == want && (!text || strstr(tgir_last_error(), text)));
  CHECK((rt != NULL) == (want == TGIR_OK));
  tgir_runtime_free(rt);
}

/* Bundles that once crashed or gave internal errors: each must be refused at open with its status. */
static void test_bad_bundles(const char *fixtures) {
  tgir_runtime_options o = tgir_runtime_default_options();
  o.backend = TGIR_BACKEND_AOTI;
  o.verify_checksums = 0; /* the broken copies keep the real checksums, or they are symlinks */
  /* a text graph of 2^61 tokens once wrapped a buffer size and crashed the first encode */
  expect_open(fixtures, "text_length_2e61", &o, TGIR_ERR_BAD_BUNDLE, "fixed L in [1, 4096]");
  expect_open(fixtures, "text_length_2e40", &o, TGIR_ERR_BAD_BUNDLE, "fixed L in [1, 4096]");
  /* another graph's package once opened and then aborted the process inside an OpenMP worker */
  expect_open(fixtures, "swapped_package", &o, TGIR_ERR_BAD_BUNDLE, "composer.so: checksum differs");
  expect_open(fixtures, "aoti_device_int", &o, TGIR_ERR_BAD_BUNDLE, "aoti.device must be a string");
  expect_open(fixtures, "aoti_torch_int", &o, TGIR_ERR_BAD_BUNDLE, "aoti.torch must be a string");
  expect_open(fixtures, "aoti_isa_list", &o, TGIR_ERR_BAD_BUNDLE, "aoti.cpu_isa must be a string");
  expect_open(fixtures, "schema_version_str", &o, TGIR_ERR_BAD_BUNDLE, "schema_version must be an integer");
#if defined(__x86_64__) || defined(__i386__)
  /* every feature of the ISA string counts, not just the whole string "avx512" or "avx2" */
  expect_open(fixtures, "aoti_isa_unknown", &o, TGIR_ERR_VERSION_MISMATCH, "this CPU lacks no_such_isa");
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/aoti_isa_amx", fixtures);
  tgir_runtime *rt = NULL;
  tgir_status got = tgir_runtime_open(dir, &o, &rt); /* opens only on a CPU with AMX */
  CHECK(got == TGIR_OK || (got == TGIR_ERR_VERSION_MISMATCH && strstr(tgir_last_error(), "lacks") &&
                           strstr(tgir_last_error(), "amx_tile")));
  tgir_runtime_free(rt);
#endif
}

/* Options the caller got wrong, and calls with documented NULL arguments, on the real bundle. */
static void test_options(const char *bundle, tgir_runtime *rt) {
  tgir_runtime_options o = tgir_runtime_default_options();
  o.backend = TGIR_BACKEND_AOTI;
  o.device = 99;
  tgir_runtime *other = NULL;
  CHECK_STATUS(tgir_runtime_open(bundle, &o, &other), TGIR_ERR_INVALID_ARGUMENT);
  CHECK(strstr(tgir_last_error(), "CUDA device 99 does not exist") != NULL);
  CHECK(other == NULL);
  size_t n = 0;
  CHECK_STATUS(tgir_tokenize(rt, "make it red", NULL, 0, &n), TGIR_OK); /* asks for the count only */
  CHECK(n == 3);
}

int main(int argc, char **argv) {
  const char *bundle = getenv("TGIR_TEST_BUNDLE");
  if (!bundle || !*bundle) {
    printf("test_runtime: TGIR_TEST_BUNDLE not set; skipped\n");
    return 77;
  }
  tgir_runtime_options o = tgir_runtime_default_options();
  o.backend = TGIR_BACKEND_AOTI;
  o.num_threads = 1;
  o.max_batch = 4; /* so that test_batching's 5 queries take two batches */
  tgir_runtime *rt = NULL;
  CHECK_STATUS(tgir_runtime_open(bundle, &o, &rt), TGIR_OK);
  if (!rt) return 1;
  tgir_runtime_info info;
  CHECK_STATUS(tgir_runtime_get_info(rt, &info), TGIR_OK);
  CHECK(info.embed_dim > 0 && strcmp(info.backend, "aoti") == 0 && strcmp(info.device, "cpu") == 0);
  size_t n = 0;
  int64_t ids[8];
  CHECK_STATUS(tgir_tokenize(rt, "", ids, 8, &n), TGIR_OK);
  CHECK(n == 1 && ids[0] == 0);
  test_inputs(rt, info.embed_dim);
  CHECK(info.max_batch == 4);
  test_batching(rt, info.embed_dim, info.max_batch);
  test_threads(rt, info.embed_dim);
  test_options(bundle, rt);
  CHECK(argc > 1); /* ctest passes the folder of broken bundles */
  if (argc > 1) test_bad_bundles(argv[1]);
  tgir_runtime_free(rt);
  if (check_failures) fprintf(stderr, "%d check(s) failed\n", check_failures);
  else printf("test_runtime: all checks passed\n");
  return check_failures ? 1 : 0;
}
