/* Includes tgir.h from plain C99 and exercises everything that needs no bundle: options, status
 * strings, NULL handling, error messages and the in-memory index. */
#include <math.h>
#include <string.h>

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
  CHECK_STATUS(tgir_index_open("/nonexistent/index", NULL, &idx), TGIR_ERR_BAD_INDEX);
  CHECK(strstr(tgir_last_error(), "not a finished tgir index") != NULL);
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

int main(void) {
  test_basics();
  test_errors();
  test_index();
  if (check_failures) fprintf(stderr, "%d check(s) failed\n", check_failures);
  else printf("test_header: all checks passed\n");
  return check_failures ? 1 : 0;
}
