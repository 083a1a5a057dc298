/* Shared helpers of the C test programs: fail loudly with the library's last error. */
#ifndef VMIGRATE_TEST_COMMON_H
#define VMIGRATE_TEST_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmigrate.h"

static inline void print_last_error(void) {
  char buf[1024];
  size_t n = 0;
  if (vmigrate_last_error(buf, sizeof buf, &n) == VMIGRATE_RESULT_OK) {
    fprintf(stderr, "  last error: %s\n", buf);
  }
}

/* Expect a call to return `want`. */
#define EXPECT_RC(call, want)                                                        \
  do {                                                                               \
    vmigrate_result rc_ = (call);                                                    \
    if (rc_ != (want)) {                                                             \
      fprintf(stderr, "%s:%d: %s returned %u (%s), want %u\n", __FILE__, __LINE__, \
              #call, (unsigned)rc_, vmigrate_error_name(rc_), (unsigned)(want));     \
      print_last_error();                                                            \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

#define CHECK_OK(call) EXPECT_RC(call, VMIGRATE_RESULT_OK)

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                               \
    }                                                                        \
  } while (0)

/* The thread's last error text (static buffer). */
static inline const char *last_error(void) {
  static char buf[4096];
  size_t n = 0;
  if (vmigrate_last_error(buf, sizeof buf, &n) != VMIGRATE_RESULT_OK) return "";
  return buf;
}

/* Read a whole file into a NUL-terminated malloc'd buffer. */
static inline char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    exit(1);
  }
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)len + 1);
  CHECK(buf != NULL);
  CHECK(fread(buf, 1, (size_t)len, f) == (size_t)len);
  buf[len] = 0;
  fclose(f);
  return buf;
}

#endif
