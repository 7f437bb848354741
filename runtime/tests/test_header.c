/* Includes tgir.h from plain C99 and exercises everything that needs no bundle: options, status
 * strings, NULL handling, error messages, the in-memory index and small index folders it writes. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "tgir.h"

static void test_basics(void) {
  tgir_runtime_options o = tgir_runtime_default_options();
  CHECK(o.backend == TGIR_BACKEND_AUTO && o.device == -1 && o.verify_checksums == 1 && o.max_batch == 0);
  CHECK(strncmp(tgir_version(), "0.", 2) == 0);
  CHECK(strcmp(tgir_status_string(TGIR_ERR_BAD_BUNDLE), "TGIR_ERR_BAD_BUNDLE") == 0);
  for (int s = TGIR_OK; s <= TGIR_ERR_INTERNAL; ++s) CHECK(strncmp(tgir_status_string((tgir_status)s), "TGIR_", 5) == 0);
  CHECK(strcmp(tgir_status_string((tgir_status)999), "TGIR_ERR_UNKNOWN") == 0);
  tgir_runtime_free(NULL); /* no-ops */
  tgir_index_free(NULL);
  CHECK(tgir_index_size(NULL) == 0);
}

static void test_errors(void) {
  tgir_runtime *rt = NULL;
  CHECK_STATUS(tgir_runtime_open(NULL, NULL, &rt), TGIR_ERR_INVALID_ARGUMENT);
  CHECK(strstr(tgir_last_error(), "bundle_dir") != NULL);
  CHECK_STATUS(tgir_runtime_open("/nonexistent/tgir-bundle", NULL, &rt), TGIR_ERR_NOT_FOUND);
  CHECK(strstr(tgir_last_error(), "no manifest.json") != NULL);
  CHECK(rt == NULL);
  CHECK_STATUS(tgir_runtime_open("/nonexistent", NULL, NULL), TGIR_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tgir_encode_query(NULL, NULL, NULL, NULL), TGIR_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tgir_encode_images(NULL, NULL, 0, NULL), TGIR_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tgir_runtime_get_info(NULL, NULL), TGIR_ERR_INVALID_ARGUMENT);
  size_t n = 0;
  CHECK_STATUS(tgir_tokenize(NULL, "red", NULL, 0, &n), TGIR_ERR_INVALID_ARGUMENT);
  tgir_index *idx = NULL;
  CHECK_STATUS(tgir_index_open("/nonexistent/index", NULL, &idx), TGIR_ERR_NOT_FOUND); /* as runtime_open */
  CHECK(strstr(tgir_last_error(), "no such index folder") != NULL);
  CHECK_STATUS(tgir_index_open("", NULL, &idx), TGIR_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tgir_runtime_open("", NULL, &rt), TGIR_ERR_INVALID_ARGUMENT);
  /* an enum field holding no enumerator is refused before the bundle is read (and without UB) */
  tgir_runtime_options o = tgir_runtime_default_options();
  o.backend = (tgir_backend)7;
  CHECK_STATUS(tgir_runtime_open("/nonexistent/tgir-bundle", &o, &rt), TGIR_ERR_INVALID_ARGUMENT);
  CHECK(strstr(tgir_last_error(), "unknown backend 7") != NULL);
  o.backend = (tgir_backend)-1;
  CHECK_STATUS(tgir_runtime_open("/nonexistent/tgir-bundle", &o, &rt), TGIR_ERR_INVALID_ARGUMENT);
  CHECK(rt == NULL);
  CHECK_STATUS(tgir_index_create(0, &idx), TGIR_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tgir_index_search(NULL, NULL, 0, 1, NULL), TGIR_ERR_INVALID_ARGUMENT);
  /* a success clears the message */
  CHECK_STATUS(tgir_index_create(2, &idx), TGIR_OK);
  CHECK(strcmp(tgir_last_error(), "") == 0);
  tgir_index_free(idx);
}

static void test_index(void) {
  tgir_index *idx = NULL;
  CHECK_STATUS(tgir_index_create(2, &idx), TGIR_OK);
  const float rows[] = {1, 0, 0, 1, 0.6f, 0.8f, 1, 0};
  const char *ids[] = {"a", "b", "c", "d"};
  const char *bad_ids[] = {"e", NULL};
  CHECK_STATUS(tgir_index_add(idx, rows, 4, ids), TGIR_OK);
  CHECK_STATUS(tgir_index_add(idx, rows, 2, bad_ids), TGIR_ERR_INVALID_ARGUMENT);
  CHECK(tgir_index_size(idx) == 4); /* a failed add leaves the index unchanged */
  const float q[] = {1, 0, 0, 1};
  tgir_hit hits[2 * 3];
  CHECK_STATUS(tgir_index_search(idx, q, 2, 3, hits), TGIR_OK);
  /* rows 0 and 3 tie at 1.0: gallery order breaks the tie */
  CHECK(hits[0].row == 0 && hits[1].row == 3 && hits[2].row == 2);
  CHECK(strcmp(hits[1].id, "d") == 0 && fabsf(hits[2].score - 0.6f) < 1e-6f);
  CHECK(hits[3].row == 1 && hits[4].row == 2 && fabsf(hits[4].score - 0.8f) < 1e-6f);
  CHECK_STATUS(tgir_index_search(idx, q, 1, 0, hits), TGIR_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tgir_index_search(idx, q, 1, 5, hits), TGIR_ERR_INVALID_ARGUMENT);
  CHECK(strstr(tgir_last_error(), "gallery size 4") != NULL);
  tgir_index_free(idx);
}

/* Sizes whose products wrap must be refused, not turned into short copies and out-of-bounds reads. */
static void test_index_bounds(void) {
  tgir_index *idx = NULL;
  CHECK_STATUS(tgir_index_create((size_t)1 << 62, &idx), TGIR_ERR_INVALID_ARGUMENT);
  CHECK(strstr(tgir_last_error(), "TGIR_MAX_INDEX_DIM") != NULL);
  CHECK_STATUS(tgir_index_create(SIZE_MAX, &idx), TGIR_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tgir_index_create(TGIR_MAX_INDEX_DIM + 1, &idx), TGIR_ERR_INVALID_ARGUMENT);
  CHECK(idx == NULL);
  CHECK_STATUS(tgir_index_create(TGIR_MAX_INDEX_DIM, &idx), TGIR_OK);
  const float q[4] = {1, 0, 0, 0};
  CHECK_STATUS(tgir_index_add(idx, q, SIZE_MAX / 4, NULL), TGIR_ERR_INVALID_ARGUMENT); /* never read */
  CHECK(tgir_index_size(idx) == 0);
  tgir_index_free(idx);
  CHECK_STATUS(tgir_index_create(4, &idx), TGIR_OK);
  CHECK_STATUS(tgir_index_add(idx, q, (size_t)1 << 62, NULL), TGIR_ERR_INVALID_ARGUMENT);
  CHECK(strstr(tgir_last_error(), "do not fit in memory") != NULL);
  CHECK_STATUS(tgir_index_add(idx, q, 1, NULL), TGIR_OK);
  tgir_hit hit;
  CHECK_STATUS(tgir_index_search(idx, q, 1, 1, &hit), TGIR_OK);
  CHECK(hit.row == 0 && strcmp(hit.id, "0") == 0 && hit.score == 1.0f);
  tgir_index_free(idx);
}

static void write_text(const char *dir, const char *name, const char *text) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

/* An index folder as `tgir index` writes it: `rows` x `dim` float32 ones, ids "0".., and index_json. */
static void write_index(const char *dir, size_t rows, size_t dim, const char *index_json) {
  char header[128], path[512];
  int n = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu), }", rows, dim);
  snprintf(path, sizeof path, "%s/embeddings.npy", dir);
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  const unsigned char magic[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)n, 0};
  fwrite(magic, 1, sizeof magic, f);
  fwrite(header, 1, (size_t)n, f);
  const float one = 1.0f;
  for (size_t i = 0; i < rows * dim; ++i) fwrite(&one, sizeof one, 1, f);
  fclose(f);
  char ids[256] = "[";
  for (size_t i = 0; i < rows; ++i) snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s\"%zu\"", i ? ", " : "", i);
  strcat(ids, "]");
  write_text(dir, "ids.json", ids);
  write_text(dir, "index.json", index_json);
}

/* index.json fields of the wrong type and a dim-0 index are malformed indexes, named as such. */
static void test_index_files(void) {
  char dir[] = "/tmp/tgir_test_index_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  tgir_index *idx = NULL;
  write_index(dir, 3, 4, "{\"format\": \"tgir-index\", \"version\": 1, \"fingerprint\": \"f\", \"count\": 3, \"dim\": 4}");
  CHECK_STATUS(tgir_index_open(dir, NULL, &idx), TGIR_OK);
  CHECK(tgir_index_size(idx) == 3);
  tgir_index_free(idx);
  idx = NULL;
  write_text(dir, "index.json", "{\"format\": 5, \"version\": 1, \"fingerprint\": \"f\", \"count\": 3, \"dim\": 4}");
  CHECK_STATUS(tgir_index_open(dir, NULL, &idx), TGIR_ERR_BAD_INDEX);
  CHECK(strstr(tgir_last_error(), "'format' must be a string") != NULL);
  write_text(dir, "index.json", "{\"format\": \"tgir-index\", \"version\": 1, \"fingerprint\": 5, \"count\": 3, \"dim\": 4}");
  CHECK_STATUS(tgir_index_open(dir, NULL, &idx), TGIR_ERR_BAD_INDEX);
  CHECK(strstr(tgir_last_error(), "'fingerprint' must be a string") != NULL);
  write_index(dir, 3, 0, "{\"format\": \"tgir-index\", \"version\": 1, \"fingerprint\": \"f\", \"count\": 3, \"dim\": 0}");
  CHECK_STATUS(tgir_index_open(dir, NULL, &idx), TGIR_ERR_BAD_INDEX); /* as tgir_index_create(0) */
  CHECK(strstr(tgir_last_error(), "embedding size 0") != NULL);
  char path[512];
  snprintf(path, sizeof path, "%s/ids.json", dir);
  CHECK_STATUS(tgir_index_open(path, NULL, &idx), TGIR_ERR_BAD_INDEX); /* a file, not a folder */
  unlink(path);
  CHECK_STATUS(tgir_index_open(dir, NULL, &idx), TGIR_ERR_BAD_INDEX); /* an unfinished index */
  CHECK(strstr(tgir_last_error(), "not a finished tgir index") != NULL);
  CHECK(idx == NULL);
  snprintf(path, sizeof path, "%s/index.json", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/embeddings.npy", dir);
  unlink(path);
  rmdir(dir);
}

int main(void) {
  test_basics();
  test_errors();
  test_index();
  test_index_bounds();
  test_index_files();
  if (check_failures) fprintf(stderr, "%d check(s) failed\n", check_failures);
  else printf("test_header: all checks passed\n");
  return check_failures ? 1 : 0;
}
