/* The README's small migration, from C: load a plan, validate it, run it with progress, print the
 * outcome. Build: cc migrate.c $(pkg-config --cflags --libs vmigrate) -o migrate
 * Usage: migrate PLAN.yaml [STATUS.json] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmigrate.h"

static int fail(const char *what, vmigrate_result rc) {
  char detail[1024];
  size_t n = 0;
  vmigrate_last_error(detail, sizeof detail, &n);
  fprintf(stderr, "%s failed: %s (%u): %s\n", what, vmigrate_error_name(rc), (unsigned)rc, detail);
  vmigrate_shutdown();
  return 1;
}

/* Called on this thread with one JSON event at a time. */
static void on_event(void *userdata, const char *event_json) {
  int *events = userdata;
  (*events)++;
  if (strstr(event_json, "\"event\":\"disk\"") == NULL) printf("event: %s\n", event_json);
}

/* The library's log records, from its own threads (stdio locks each line). */
static void on_log(void *userdata, vmigrate_log_level level, const char *target, const char *message) {
  (void)userdata;
  static const char *names[] = {"?", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"};
  printf("log %s %s: %s\n", names[level <= 5 ? level : 0], target, message);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PLAN.yaml [STATUS.json]\n", argv[0]);
    return 2;
  }
  vmigrate_result rc;
  if ((rc = vmigrate_set_log_callback(on_log, NULL, VMIGRATE_LOG_LEVEL_INFO)) != VMIGRATE_RESULT_OK)
    return fail("setting the log callback", rc);
  vmigrate_plan *plan = NULL;
  if ((rc = vmigrate_plan_new_from_file(argv[1], &plan)) != VMIGRATE_RESULT_OK) return fail("loading the plan", rc);

  char *validation = NULL;
  bool blocked = false;
  if ((rc = vmigrate_plan_validate(plan, NULL, &validation, &blocked)) != VMIGRATE_RESULT_OK) {
    vmigrate_plan_free(plan);
    return fail("validating", rc);
  }
  printf("validation: %s\n", validation);
  vmigrate_string_free(validation);
  if (blocked) {
    fprintf(stderr, "plan is blocked by critical concerns\n");
    vmigrate_plan_free(plan);
    vmigrate_shutdown();
    return 3;
  }

  vmigrate_migration *migration = NULL;
  rc = vmigrate_migration_new(plan, argc > 2 ? argv[2] : NULL, &migration);
  vmigrate_plan_free(plan);
  if (rc != VMIGRATE_RESULT_OK) return fail("opening source and target", rc);

  int events = 0;
  char *status = NULL;
  rc = vmigrate_migration_run(migration, on_event, &events, &status);
  vmigrate_migration_free(migration);
  if (rc != VMIGRATE_RESULT_OK) return fail("migrating", rc);
  printf("%d events\nstatus: %s\n", events, status);
  vmigrate_string_free(status);
  vmigrate_shutdown();
  return 0;
}
