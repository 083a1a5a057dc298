/* Cancel a running migration from another thread: the run returns VMIGRATE_RESULT_CANCELLED and
 * the status shows the VM Canceled. Usage: cancel PLAN.yaml */
#include "cancel_at_start.h"

static vmigrate_result cancel_migration(const void *m) { return vmigrate_migration_cancel(m); }

int main(int argc, char **argv) {
  CHECK(argc == 2);
  vmigrate_plan *plan = NULL;
  CHECK_OK(vmigrate_plan_new_from_file(argv[1], &plan));
  vmigrate_migration *migration = NULL;
  CHECK_OK(vmigrate_migration_new(plan, NULL, &migration));
  vmigrate_plan_free(plan);

  struct cancel_at_start s;
  cancel_at_start_begin(&s, cancel_migration, migration);
  char *status = NULL;
  EXPECT_RC(vmigrate_migration_run(migration, cancel_at_start_on_event, &s, &status), VMIGRATE_RESULT_CANCELLED);
  CHECK(status == NULL);
  cancel_at_start_end(&s);
  CHECK(strstr(last_error(), "cancelled") != NULL);

  CHECK_OK(vmigrate_migration_status(migration, &status));
  printf("status after cancel: %s\n", status);
  CHECK(strstr(status, "\"phase\":\"Canceled\"") != NULL);
  CHECK(strstr(status, "\"phase\":\"Completed\"") == NULL);
  vmigrate_string_free(status);

  EXPECT_RC(vmigrate_migration_cancel(NULL), VMIGRATE_RESULT_INVALID_ARGUMENT);
  vmigrate_migration_free(migration);
  CHECK_OK(vmigrate_shutdown());
  printf("cancel: ok\n");
  return 0;
}
