/* The error-code table, messages, buffer rules and NULL handling of the C API. */
#include "common.h"

int main(int argc, char **argv) {
  CHECK(argc == 2);
  long want_codes = strtol(argv[1], NULL, 10);

  /* Every number with a name has a message; the number of codes matches the Rust table. */
  long codes = 0;
  for (uint32_t n = 0; n < 10000; n++) {
    const char *name = vmigrate_error_name(n);
    char buf[256];
    size_t len = 12345;
    vmigrate_result rc = vmigrate_error_message(n, buf, sizeof buf, &len);
    if (name == NULL) {
      CHECK(rc == VMIGRATE_RESULT_INVALID_ARGUMENT);
      CHECK(len == 12345); /* out-params untouched on failure */
      continue;
    }
    codes++;
    CHECK(rc == VMIGRATE_RESULT_OK);
    CHECK(len > 0 && len == strlen(buf));
  }
  if (codes != want_codes) fprintf(stderr, "library has %ld codes, the Rust table %ld\n", codes, want_codes);
  CHECK(codes == want_codes);

  CHECK(strcmp(vmigrate_error_name(VMIGRATE_RESULT_OK), "Ok") == 0);
  CHECK(strcmp(vmigrate_error_name(VMIGRATE_RESULT_PLAN_PARSE), "PlanParse") == 0);
  CHECK(VMIGRATE_RESULT_PLAN_PARSE == 1001);
  CHECK(VMIGRATE_RESULT_PANIC == 9001);
  CHECK(VMIGRATE_RESULT_CANCELLED == 5001);

  /* Truncation: snprintf-style, *out_n is the full length. */
  char small[8];
  size_t full = 0;
  CHECK_OK(vmigrate_error_message(VMIGRATE_RESULT_PLAN_PARSE, small, sizeof small, &full));
  CHECK(strlen(small) == 7);
  CHECK(full > 7);
  size_t needed = 0;
  CHECK_OK(vmigrate_error_message(VMIGRATE_RESULT_PLAN_PARSE, NULL, 0, &needed));
  CHECK(needed == full);
  EXPECT_RC(vmigrate_error_message(VMIGRATE_RESULT_PLAN_PARSE, small, sizeof small, NULL),
            VMIGRATE_RESULT_INVALID_ARGUMENT);

  /* NULL handling: typed error, out-param untouched, detail in last_error. */
  vmigrate_plan *plan = (vmigrate_plan *)0x1;
  EXPECT_RC(vmigrate_plan_new_from_str(NULL, &plan), VMIGRATE_RESULT_INVALID_ARGUMENT);
  CHECK(plan == (vmigrate_plan *)0x1);
  CHECK(strstr(last_error(), "text is NULL") != NULL);
  EXPECT_RC(vmigrate_plan_new_from_str("kind: Plan", NULL), VMIGRATE_RESULT_INVALID_ARGUMENT);
  EXPECT_RC(vmigrate_plan_new_from_file(NULL, &plan), VMIGRATE_RESULT_INVALID_ARGUMENT);
  char *json = NULL;
  EXPECT_RC(vmigrate_plan_to_json(NULL, &json), VMIGRATE_RESULT_INVALID_ARGUMENT);
  CHECK(json == NULL);
  bool blocked = true;
  EXPECT_RC(vmigrate_plan_validate(NULL, NULL, &json, &blocked), VMIGRATE_RESULT_INVALID_ARGUMENT);
  vmigrate_source *source = NULL;
  EXPECT_RC(vmigrate_source_new(NULL, NULL, NULL, NULL, NULL, false, &source), VMIGRATE_RESULT_INVALID_ARGUMENT);
  EXPECT_RC(vmigrate_source_new("vmx:///nonexistent", "user", NULL, NULL, NULL, false, &source),
            VMIGRATE_RESULT_INVALID_ARGUMENT);
  CHECK(strstr(last_error(), "together") != NULL);
  EXPECT_RC(vmigrate_source_new("gopher://x", NULL, NULL, NULL, NULL, false, &source), VMIGRATE_RESULT_BAD_URL);
  CHECK(source == NULL);
  EXPECT_RC(vmigrate_source_inventory(NULL, &json), VMIGRATE_RESULT_INVALID_ARGUMENT);
  EXPECT_RC(vmigrate_status_load(NULL, &json), VMIGRATE_RESULT_INVALID_ARGUMENT);
  EXPECT_RC(vmigrate_status_load("/nonexistent/status.json", &json), VMIGRATE_RESULT_STATUS_FILE);
  CHECK(json == NULL);

  /* Parse errors are typed and carry the line. */
  EXPECT_RC(vmigrate_plan_new_from_str("apiVersion: vmigrate.dev/v1alpha1\nkind: Plan\nbogus: [\n", &plan),
            VMIGRATE_RESULT_PLAN_PARSE);
  CHECK(strstr(last_error(), "line") != NULL);
  EXPECT_RC(vmigrate_plan_new_from_str("{\"apiVersion\": 3", &plan), VMIGRATE_RESULT_PLAN_PARSE);
  CHECK(strstr(last_error(), "line 1") != NULL);
  EXPECT_RC(vmigrate_plan_new_from_file("/nonexistent/plan.yaml", &plan), VMIGRATE_RESULT_PLAN_PARSE);

  /* Non-UTF-8 input is refused, not mangled. */
  EXPECT_RC(vmigrate_plan_new_from_str("kind: \xff\xfe", &plan), VMIGRATE_RESULT_INVALID_ARGUMENT);
  CHECK(strstr(last_error(), "UTF-8") != NULL);

  /* Freeing NULL is a no-op. */
  vmigrate_plan_free(NULL);
  vmigrate_source_free(NULL);
  vmigrate_string_free(NULL);
  CHECK(strlen(vmigrate_version()) > 0);

  CHECK_OK(vmigrate_shutdown());
  printf("errors: %ld codes ok\n", codes);
  return 0;
}
