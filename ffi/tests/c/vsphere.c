/* Connect to a vSphere endpoint (vcsim) with credentials and a pinned thumbprint, list the
 * inventory, and check that a wrong password and a wrong thumbprint are typed errors.
 * Usage: vsphere URL USERNAME PASSWORD THUMBPRINT */
#include "common.h"

/* Open and list; returns the first failing code. */
static vmigrate_result try_inventory(const char *url, const char *user, const char *pass, const char *thumb,
                                     char **json) {
  vmigrate_source *source = NULL;
  vmigrate_result rc = vmigrate_source_new(url, user, pass, thumb, NULL, false, &source);
  if (rc != VMIGRATE_RESULT_OK) return rc;
  rc = vmigrate_source_inventory(source, json);
  vmigrate_source_free(source);
  return rc;
}

int main(int argc, char **argv) {
  CHECK(argc == 5);
  char *json = NULL;
  CHECK_OK(try_inventory(argv[1], argv[2], argv[3], argv[4], &json));
  CHECK(strstr(json, "\"name\":\"database\"") != NULL);
  CHECK(strstr(json, "\"name\":\"winweb01\"") != NULL);
  CHECK(strstr(json, argv[3]) == NULL); /* the password never shows up */
  vmigrate_string_free(json);

  json = NULL;
  EXPECT_RC(try_inventory(argv[1], argv[2], "wrong-password", argv[4], &json), VMIGRATE_RESULT_SOURCE_INVALID_LOGIN);
  CHECK(json == NULL);
  CHECK(strstr(last_error(), "wrong-password") == NULL);

  const char *bad_thumb =
      "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF";
  EXPECT_RC(try_inventory(argv[1], argv[2], argv[3], bad_thumb, &json), VMIGRATE_RESULT_SOURCE_TLS);

  CHECK_OK(vmigrate_shutdown());
  printf("vsphere: ok\n");
  return 0;
}
