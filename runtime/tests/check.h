/* A minimal assertion helper for the C tests: prints the failing expression and tgir_last_error(). */
#ifndef TGIR_TEST_CHECK_H
#define TGIR_TEST_CHECK_H
#include <stdio.h>
#include <stdlib.h>

#include "tgir.h"

static int check_failures = 0;
#define CHECK(cond)                                                                                  \
  do {                                                                                               \
    if (!(cond)) {                                                                                   \
      fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__, #cond,        \
              tgir_last_error());                                                                    \
      ++check_failures;                                                                              \
    }                                                                                                \
  } while (0)
#define CHECK_STATUS(call, want) CHECK((call) == (want))
#endif
