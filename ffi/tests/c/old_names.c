/* The old names of renamed result codes still compile and equal the new ones, with the numbers
   they always had (a frozen list: a number here never changes). Compiled with
   VMIGRATE_NO_OLD_NAMES, the header must leave every old name out. */
#include "common.h"

#ifdef VMIGRATE_NO_OLD_NAMES
#if defined(VMIGRATE_RESULT_VSPHERE_CONNECT) || defined(VMIGRATE_RESULT_VMX_PARSE) || \
    defined(VMIGRATE_RESULT_KUBE_CONFIG) || defined(VMIGRATE_RESULT_KUBE_API)
#error "VMIGRATE_NO_OLD_NAMES did not leave the old names out"
#endif
int main(void) {
  CHECK(VMIGRATE_RESULT_SOURCE_CONNECT == 2001);
  printf("old names: left out\n");
  return 0;
}
#else

struct alias {
  vmigrate_result old_name, new_name;
  uint32_t number;
  const char *name;
};

static const struct alias ALIASES[] = {
    {VMIGRATE_RESULT_VSPHERE_CONNECT, VMIGRATE_RESULT_SOURCE_CONNECT, 2001, "SourceConnect"},
    {VMIGRATE_RESULT_VSPHERE_TLS, VMIGRATE_RESULT_SOURCE_TLS, 2002, "SourceTls"},
    {VMIGRATE_RESULT_VSPHERE_INVALID_LOGIN, VMIGRATE_RESULT_SOURCE_INVALID_LOGIN, 2003, "SourceInvalidLogin"},
    {VMIGRATE_RESULT_VSPHERE_NOT_AUTHENTICATED, VMIGRATE_RESULT_SOURCE_NOT_AUTHENTICATED, 2004,
     "SourceNotAuthenticated"},
    {VMIGRATE_RESULT_VSPHERE_NOT_FOUND, VMIGRATE_RESULT_SOURCE_NOT_FOUND, 2005, "SourceNotFound"},
    {VMIGRATE_RESULT_VSPHERE_TASK_FAILED, VMIGRATE_RESULT_SOURCE_TASK_FAILED, 2006, "SourceTaskFailed"},
    {VMIGRATE_RESULT_VSPHERE_INVALID_STATE, VMIGRATE_RESULT_SOURCE_INVALID_STATE, 2007, "SourceInvalidState"},
    {VMIGRATE_RESULT_VSPHERE_TASK_IN_PROGRESS, VMIGRATE_RESULT_SOURCE_TASK_IN_PROGRESS, 2008, "SourceTaskInProgress"},
    {VMIGRATE_RESULT_VSPHERE_FAULT, VMIGRATE_RESULT_SOURCE_FAULT, 2009, "SourceFault"},
    {VMIGRATE_RESULT_VSPHERE_MALFORMED, VMIGRATE_RESULT_SOURCE_MALFORMED, 2010, "SourceMalformed"},
    {VMIGRATE_RESULT_VMX_PARSE, VMIGRATE_RESULT_SOURCE_DESCRIPTOR_PARSE, 2011, "SourceDescriptorParse"},
    {VMIGRATE_RESULT_VMDK_FORMAT, VMIGRATE_RESULT_SOURCE_DISK_FORMAT, 2012, "SourceDiskFormat"},
    {VMIGRATE_RESULT_DATASTORE_FILE_MISSING, VMIGRATE_RESULT_SOURCE_FILE_MISSING, 2013, "SourceFileMissing"},
    {VMIGRATE_RESULT_KUBE_CONFIG, VMIGRATE_RESULT_TARGET_CONFIG, 3001, "TargetConfig"},
    {VMIGRATE_RESULT_KUBE_FORBIDDEN, VMIGRATE_RESULT_TARGET_FORBIDDEN, 3002, "TargetForbidden"},
    {VMIGRATE_RESULT_KUBE_NOT_FOUND, VMIGRATE_RESULT_TARGET_NOT_FOUND, 3003, "TargetNotFound"},
    {VMIGRATE_RESULT_KUBE_CONFLICT, VMIGRATE_RESULT_TARGET_CONFLICT, 3004, "TargetConflict"},
    {VMIGRATE_RESULT_KUBE_INVALID, VMIGRATE_RESULT_TARGET_INVALID, 3005, "TargetInvalid"},
    {VMIGRATE_RESULT_KUBE_MISSING_CRD, VMIGRATE_RESULT_TARGET_MISSING_API, 3006, "TargetMissingApi"},
    {VMIGRATE_RESULT_KUBE_QUOTA, VMIGRATE_RESULT_TARGET_QUOTA, 3007, "TargetQuota"},
    {VMIGRATE_RESULT_CDI_UPLOAD, VMIGRATE_RESULT_TARGET_UPLOAD_FAILED, 3008, "TargetUploadFailed"},
    {VMIGRATE_RESULT_DATA_VOLUME_FAILED, VMIGRATE_RESULT_TARGET_IMPORT_FAILED, 3009, "TargetImportFailed"},
    {VMIGRATE_RESULT_KUBE_API, VMIGRATE_RESULT_TARGET_FAULT, 3010, "TargetFault"},
};

int main(void) {
  size_t n = sizeof ALIASES / sizeof ALIASES[0];
  for (size_t i = 0; i < n; i++) {
    const struct alias *a = &ALIASES[i];
    if (a->old_name != a->new_name || (uint32_t)a->new_name != a->number) {
      fprintf(stderr, "%s: old %u, new %u, want %u\n", a->name, (unsigned)a->old_name, (unsigned)a->new_name,
              (unsigned)a->number);
      exit(1);
    }
    /* The library reports the current name for the number. */
    const char *name = vmigrate_error_name(a->old_name);
    CHECK(name != NULL && strcmp(name, a->name) == 0);
    size_t len = 0;
    CHECK_OK(vmigrate_error_message(a->old_name, NULL, 0, &len));
    CHECK(len > 0);
  }
  /* A switch over old and new names of one code would not compile: they are one constant. */
  switch ((vmigrate_result)2003) {
    case VMIGRATE_RESULT_VSPHERE_INVALID_LOGIN:
      break;
    default:
      CHECK(0);
  }
  CHECK_OK(vmigrate_shutdown());
  printf("old names: %zu ok\n", n);
  return 0;
}
#endif
