/* Open the local vmx:// source and list its inventory as JSON. Usage: inventory URL */
#include "common.h"

int main(int argc, char **argv) {
  CHECK(argc == 2);
  vmigrate_source *source = NULL;
  CHECK_OK(vmigrate_source_new(argv[1], NULL, NULL, NULL, NULL, false, &source));
  char *json = NULL;
  CHECK_OK(vmigrate_source_inventory(source, &json));
  CHECK(strstr(json, "\"name\":\"haproxy\"") != NULL);
  CHECK(strstr(json, "\"name\":\"winweb02\"") != NULL);
  CHECK(strstr(json, "WorkloadDatastore") != NULL);
  vmigrate_string_free(json);
  vmigrate_source_free(source);

  /* A folder that does not exist is a typed error, not a crash. */
  source = NULL;
  vmigrate_result rc = vmigrate_source_new("vmx:///nonexistent/datastore", NULL, NULL, NULL, NULL, false, &source);
  CHECK(rc != VMIGRATE_RESULT_PANIC);
  if (rc == VMIGRATE_RESULT_OK) { /* opening may be lazy: then listing fails */
    json = NULL;
    rc = vmigrate_source_inventory(source, &json);
    CHECK(rc != VMIGRATE_RESULT_OK && rc != VMIGRATE_RESULT_PANIC && json == NULL);
    vmigrate_source_free(source);
  } else {
    CHECK(source == NULL);
  }
  CHECK_OK(vmigrate_shutdown());
  printf("inventory: ok\n");
  return 0;
}
