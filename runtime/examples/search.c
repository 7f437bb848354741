/* search: the C runtime end to end. Opens a bundle and a gallery index, reads a reference PNG and a
 * text, and prints the top-k gallery entries.
 *
 *   tgir_search BUNDLE INDEX IMAGE.png "make the red circle big" [K]
 *
 * Build: part of runtime/CMakeLists.txt (needs libpng). */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tgir.h"

/* Decode a PNG to 8-bit RGB with libpng's simplified API (palette, grey, 16-bit and alpha images are
 * converted). Returns NULL with a message on stderr. */
static uint8_t *read_png(const char *path, size_t *width, size_t *height) {
  png_image image;
  memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path)) {
    fprintf(stderr, "tgir_search: %s: cannot read PNG (%s)\n", path, image.message);
    return NULL;
  }
  image.format = PNG_FORMAT_RGB;
  uint8_t *pixels = malloc(PNG_IMAGE_SIZE(image));
  if (!pixels || !png_image_finish_read(&image, NULL, pixels, 0, NULL)) {
    fprintf(stderr, "tgir_search: %s: cannot decode PNG (%s)\n", path, pixels ? image.message : "out of memory");
    free(pixels);
    png_image_free(&image);
    return NULL;
  }
  *width = image.width;
  *height = image.height;
  return pixels;
}

static int fail(const char *what) {
  fprintf(stderr, "tgir_search: %s: %s\n", what, tgir_last_error());
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 5 || argc > 6) {
    fprintf(stderr, "usage: %s BUNDLE INDEX IMAGE.png TEXT [K]\n", argv[0]);
    return 2;
  }
  long k = argc == 6 ? strtol(argv[5], NULL, 10) : 10;
  size_t width = 0, height = 0;
  uint8_t *pixels = read_png(argv[3], &width, &height);
  if (!pixels) return 1;
  int rc = 1;
  tgir_runtime *rt = NULL;
  tgir_index *index = NULL;
  float *query = NULL;
  tgir_hit *hits = NULL;
  tgir_runtime_info info;
  if (tgir_runtime_open(argv[1], NULL, &rt) != TGIR_OK) { rc = fail(argv[1]); goto done; }
  if (tgir_index_open(argv[2], rt, &index) != TGIR_OK) { rc = fail(argv[2]); goto done; }
  tgir_runtime_get_info(rt, &info);
  if (k < 1 || (size_t)k > tgir_index_size(index)) {
    fprintf(stderr, "tgir_search: K must be between 1 and the gallery size %zu\n", tgir_index_size(index));
    goto done;
  }
  query = malloc(info.embed_dim * sizeof(float));
  hits = malloc((size_t)k * sizeof(tgir_hit));
  tgir_image image = {pixels, width, height, 0};
  if (!query || !hits) { fprintf(stderr, "tgir_search: out of memory\n"); goto done; }
  if (tgir_encode_query(rt, &image, argv[4], query) != TGIR_OK) { rc = fail("encode"); goto done; }
  if (tgir_index_search(index, query, 1, (size_t)k, hits) != TGIR_OK) { rc = fail("search"); goto done; }
  for (long i = 0; i < k; ++i) printf("%ld\t%.6f\t%s\n", i + 1, hits[i].score, hits[i].id);
  rc = 0;
done:
  free(hits);
  free(query);
  free(pixels);
  tgir_index_free(index);
  tgir_runtime_free(rt);
  return rc;
}
