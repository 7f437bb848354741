/* The runtime on a real bundle (TGIR_TEST_BUNDLE, a bundle with AOTInductor packages): encoding,
 * bad inputs, batching, and clones used from two threads. Exit 77 (skipped) without a bundle. */
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

int main(void) {
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
  tgir_runtime_free(rt);
  if (check_failures) fprintf(stderr, "%d check(s) failed\n", check_failures);
  else printf("test_runtime: all checks passed\n");
  return check_failures ? 1 : 0;
}
