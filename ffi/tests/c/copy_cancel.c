/* Cancel copies through a cancel switch (pulled before the call, and from another thread while
 * it runs); a copy with a checkpoint file completes and removes it (a later run must not skip
 * work against a changed source). Options are JSON, checked strictly.
 * Usage: copy_cancel SRC DST CHECKPOINT */
#include "cancel_at_start.h"

static vmigrate_result pull_switch(const void *c) { return vmigrate_cancel_trigger(c); }

int main(int argc, char **argv) {
  CHECK(argc == 4);
  char options[4096];
  const char *small_requests = "{\"connections\": 2, \"requestSize\": 65536, \"overwrite\": true}";
  char *stats = NULL;

  /* A switch pulled before the call cancels it at once. */
  vmigrate_cancel *pulled = NULL;
  CHECK_OK(vmigrate_cancel_new(&pulled));
  CHECK_OK(vmigrate_cancel_trigger(pulled));
  EXPECT_RC(vmigrate_copy_disk_with(argv[1], argv[2], small_requests, pulled, NULL, NULL, &stats),
            VMIGRATE_RESULT_CANCELLED);
  CHECK(stats == NULL);
  vmigrate_cancel_free(pulled);

  /* Pulled from another thread at the first progress event (the start of the copy). */
  vmigrate_cancel *running = NULL;
  CHECK_OK(vmigrate_cancel_new(&running));
  struct cancel_at_start s;
  cancel_at_start_begin(&s, pull_switch, running);
  EXPECT_RC(vmigrate_copy_disk_with(argv[1], argv[2], small_requests, running, cancel_at_start_on_event, &s, &stats),
            VMIGRATE_RESULT_CANCELLED);
  CHECK(stats == NULL);
  cancel_at_start_end(&s);
  CHECK(strstr(last_error(), "cancelled") != NULL);
  vmigrate_cancel_free(running);

  /* A copy with a checkpoint file completes, verified, and removes the checkpoint. */
  snprintf(options, sizeof options, "{\"verify\": true, \"overwrite\": true, \"checkpoint\": \"%s\"}", argv[3]);
  CHECK_OK(vmigrate_copy_disk_with(argv[1], argv[2], options, NULL, NULL, NULL, &stats));
  printf("copied: %s\n", stats);
  CHECK(strstr(stats, "\"targetDigest\":\"") != NULL);
  CHECK(strstr(stats, "\"bytesRead\":0,") == NULL);
  vmigrate_string_free(stats);
  FILE *cp = fopen(argv[3], "r");
  CHECK(cp == NULL);

  /* The same call again has nothing to resume from: it copies everything again. */
  CHECK_OK(vmigrate_copy_disk_with(argv[1], argv[2], options, NULL, NULL, NULL, &stats));
  printf("again: %s\n", stats);
  CHECK(strstr(stats, "\"bytesRead\":0,") == NULL);
  vmigrate_string_free(stats);

  /* Options are checked: unknown fields, wrong types and zero counts are invalid arguments. */
  EXPECT_RC(vmigrate_copy_disk_with(argv[1], argv[2], "{\"conections\": 2}", NULL, NULL, NULL, NULL),
            VMIGRATE_RESULT_INVALID_ARGUMENT);
  CHECK(strstr(last_error(), "conections") != NULL);
  EXPECT_RC(vmigrate_copy_disk_with(argv[1], argv[2], "{\"connections\": 0}", NULL, NULL, NULL, NULL),
            VMIGRATE_RESULT_INVALID_ARGUMENT);
  EXPECT_RC(vmigrate_copy_disk_with(argv[1], argv[2], "{\"verify\": 1}", NULL, NULL, NULL, NULL),
            VMIGRATE_RESULT_INVALID_ARGUMENT);
  /* NULL and empty options are the defaults, which do not replace the existing target. */
  EXPECT_RC(vmigrate_copy_disk_with(argv[1], argv[2], NULL, NULL, NULL, NULL, NULL), VMIGRATE_RESULT_TARGET_EXISTS);
  EXPECT_RC(vmigrate_copy_disk_with(argv[1], argv[2], "", NULL, NULL, NULL, NULL), VMIGRATE_RESULT_TARGET_EXISTS);
  /* A copy onto its own source is refused, overwrite or not. */
  EXPECT_RC(vmigrate_copy_disk_with(argv[1], argv[1], "{\"overwrite\": true}", NULL, NULL, NULL, NULL),
            VMIGRATE_RESULT_SAME_DISK);
  /* A switch is a live handle or NULL. */
  EXPECT_RC(vmigrate_cancel_trigger(NULL), VMIGRATE_RESULT_INVALID_ARGUMENT);
  EXPECT_RC(vmigrate_cancel_new(NULL), VMIGRATE_RESULT_INVALID_ARGUMENT);
  vmigrate_cancel_free(NULL);

  CHECK_OK(vmigrate_shutdown());
  return 0;
}
