/* Copy a sparse raw image with the engine alone, counting progress events.
 * Usage: copy SRC DST */
#include "common.h"

struct progress {
  int events;
  unsigned long long last_done, last_total;
};

static unsigned long long field(const char *json, const char *key) {
  const char *p = strstr(json, key);
  if (!p) return 0;
  return strtoull(p + strlen(key), NULL, 10);
}

static void on_progress(void *userdata, const char *event_json) {
  struct progress *p = userdata;
  p->events++;
  CHECK(strstr(event_json, "\"event\":\"copy\"") != NULL);
  unsigned long long done = field(event_json, "\"done\":");
  CHECK(done >= p->last_done); /* monotonic */
  p->last_done = done;
  p->last_total = field(event_json, "\"total\":");
}

int main(int argc, char **argv) {
  CHECK(argc == 3);
  struct progress p = {0};
  char *stats = NULL;
  remove(argv[2]); /* a target from an earlier run is refused, see below */
  CHECK_OK(vmigrate_copy_disk(argv[1], argv[2], true, on_progress, &p, &stats));
  printf("copy: %d progress events, stats %s\n", p.events, stats);
  CHECK(p.events >= 1);
  CHECK(p.last_total > 0 && p.last_done == p.last_total);
  CHECK(strstr(stats, "\"sourceDigest\":\"") != NULL);
  CHECK(field(stats, "\"bytesWritten\":") < p.last_total); /* holes were not written */
  vmigrate_string_free(stats);

  /* The target now exists: it is not replaced unless asked (and the source never is). */
  EXPECT_RC(vmigrate_copy_disk(argv[1], argv[2], false, NULL, NULL, NULL), VMIGRATE_RESULT_TARGET_EXISTS);
  CHECK(strstr(last_error(), "overwrite") != NULL);
  EXPECT_RC(vmigrate_copy_disk_with(argv[1], argv[1], "{\"overwrite\": true}", NULL, NULL, NULL, NULL),
            VMIGRATE_RESULT_SAME_DISK);
  /* No callback and no stats wanted is fine too. */
  CHECK_OK(vmigrate_copy_disk_with(argv[1], argv[2], "{\"overwrite\": true}", NULL, NULL, NULL, NULL));

  /* Errors are typed: a missing source is an I/O error, a vmdk target is refused. */
  EXPECT_RC(vmigrate_copy_disk("/nonexistent/disk.img", argv[2], false, NULL, NULL, NULL), VMIGRATE_RESULT_IO);
  EXPECT_RC(vmigrate_copy_disk(argv[1], "/tmp/out.vmdk", false, NULL, NULL, NULL), VMIGRATE_RESULT_BAD_URL);
  EXPECT_RC(vmigrate_copy_disk(NULL, argv[2], false, NULL, NULL, NULL), VMIGRATE_RESULT_INVALID_ARGUMENT);

  CHECK_OK(vmigrate_shutdown());
  return 0;
}
