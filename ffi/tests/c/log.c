/* The library's log records reach a C callback, from library threads, filtered by level.
 * Usage: log SRC DST */
#include <stdatomic.h>

#include "common.h"

struct seen {
  atomic_int records;
  atomic_int opened; /* the file transport's "opened" record, with its path */
  atomic_int too_verbose; /* records above the level asked for */
  atomic_int max_level;
};

static void on_log(void *userdata, vmigrate_log_level level, const char *target, const char *message) {
  struct seen *s = userdata;
  atomic_fetch_add(&s->records, 1);
  if ((int)level > atomic_load(&s->max_level)) atomic_fetch_add(&s->too_verbose, 1);
  if (strncmp(target, "vmigrate_core::file", 19) == 0 && strstr(message, "opened file transport path=") != NULL) {
    atomic_fetch_add(&s->opened, 1);
  }
}

int main(int argc, char **argv) {
  CHECK(argc == 3);
  static struct seen s;
  const char *overwrite = "{\"overwrite\": true}";
  atomic_store(&s.max_level, VMIGRATE_LOG_LEVEL_DEBUG);
  CHECK_OK(vmigrate_set_log_callback(on_log, &s, VMIGRATE_LOG_LEVEL_DEBUG));
  CHECK_OK(vmigrate_copy_disk_with(argv[1], argv[2], overwrite, NULL, NULL, NULL, NULL));
  printf("log: %d records at DEBUG, %d about opening a file\n", atomic_load(&s.records), atomic_load(&s.opened));
  CHECK(atomic_load(&s.opened) >= 2); /* source and target */
  CHECK(atomic_load(&s.too_verbose) == 0);

  /* At WARN, a successful copy says nothing. */
  int before = atomic_load(&s.records);
  atomic_store(&s.max_level, VMIGRATE_LOG_LEVEL_WARN);
  CHECK_OK(vmigrate_set_log_callback(on_log, &s, VMIGRATE_LOG_LEVEL_WARN));
  CHECK_OK(vmigrate_copy_disk_with(argv[1], argv[2], overwrite, NULL, NULL, NULL, NULL));
  CHECK(atomic_load(&s.records) == before);

  /* Removed: nothing more arrives, even at the most verbose level asked before. */
  CHECK_OK(vmigrate_set_log_callback(NULL, NULL, VMIGRATE_LOG_LEVEL_TRACE));
  CHECK_OK(vmigrate_copy_disk_with(argv[1], argv[2], overwrite, NULL, NULL, NULL, NULL));
  CHECK(atomic_load(&s.records) == before);

  /* A level out of range is refused. */
  EXPECT_RC(vmigrate_set_log_callback(on_log, &s, 9), VMIGRATE_RESULT_INVALID_ARGUMENT);

  CHECK_OK(vmigrate_shutdown());
  return 0;
}
