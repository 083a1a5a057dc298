/* Load a plan (file and text), validate it against an inventory given as JSON, and check the
 * per-VM result. Usage: validate PLAN.yaml INVENTORY.json */
#include "common.h"

int main(int argc, char **argv) {
  CHECK(argc == 3);
  char *inventory = read_file(argv[2]);

  vmigrate_plan *plan = NULL;
  CHECK_OK(vmigrate_plan_new_from_file(argv[1], &plan));
  CHECK(plan != NULL);

  char *json = NULL;
  CHECK_OK(vmigrate_plan_to_json(plan, &json));
  CHECK(strstr(json, "\"move-webapp-vmware\"") != NULL);

  /* The same plan through the text entry point (JSON this time). */
  vmigrate_plan *again = NULL;
  CHECK_OK(vmigrate_plan_new_from_str(json, &again));
  vmigrate_string_free(json);

  char *result = NULL;
  bool blocked = true;
  CHECK_OK(vmigrate_plan_validate(again, inventory, &result, &blocked));
  printf("validation: %s\n", result);
  /* The lab's winweb02 still has its install ISO connected: critical, so the plan is blocked. */
  CHECK(blocked);
  CHECK(strstr(result, "\"blocked\":true") != NULL);
  CHECK(strstr(result, "\"id\":\"cdrom.iso-connected\"") != NULL);
  CHECK(strstr(result, "{\"concerns\":[],\"name\":\"database\"") != NULL);
  CHECK(strstr(result, "\"name\":\"database\"") != NULL);
  CHECK(strstr(result, "\"name\":\"winweb01\"") != NULL);
  CHECK(strstr(result, "\"targetName\":\"winweb02\"") != NULL);
  vmigrate_string_free(result);

  /* A VM missing from the inventory blocks the plan: still a successful call. */
  const char *missing =
      "apiVersion: vmigrate.dev/v1alpha1\n"
      "kind: Plan\n"
      "metadata: { name: ghost }\n"
      "spec:\n"
      "  source: { url: 'vmx:///nonexistent' }\n"
      "  target: { url: 'dir:///tmp/out' }\n"
      "  targetNamespace: demo\n"
      "  vms: [ { name: no-such-vm } ]\n";
  vmigrate_plan *ghost = NULL;
  CHECK_OK(vmigrate_plan_new_from_str(missing, &ghost));
  blocked = false;
  CHECK_OK(vmigrate_plan_validate(ghost, inventory, &result, &blocked));
  CHECK(blocked);
  CHECK(strstr(result, "\"severity\":\"critical\"") != NULL);
  vmigrate_string_free(result);

  /* Bad inventory JSON is an invalid argument; out-params untouched. */
  result = NULL;
  blocked = false;
  EXPECT_RC(vmigrate_plan_validate(ghost, "{\"vms\": 3}", &result, &blocked), VMIGRATE_RESULT_INVALID_ARGUMENT);
  CHECK(result == NULL && !blocked);

  vmigrate_plan_free(ghost);
  vmigrate_plan_free(again);
  vmigrate_plan_free(plan);
  free(inventory);
  CHECK_OK(vmigrate_shutdown());
  printf("validate: ok\n");
  return 0;
}
