/* Produce every wire-format document through the C API and write each into a fresh folder, for
 * ffi/tests/c_programs.rs to compare with tests/golden/ (docs/wire-format.md).
 * Usage: wire LAB_DATASTORE PLAN_TEMPLATE SCRATCH IMAGE
 * Makes SCRATCH/runXXXXXX, fills the plan template's @LAB@ and @OUT@ (RUN/out), writes there
 * inventory.json, plan-validation.json, plan-status.json (the run's final status),
 * plan-status-loaded.json (vmigrate_status_load of the status file), migration-events.json (the
 * run's events but the disk progress ones, as a JSON array), copy-stats.json and
 * copy-progress.json (the copy's last progress event), then prints "run: RUN". */
#define _DEFAULT_SOURCE
#include <stdlib.h>

#include "common.h"

/* `text` with every `from` replaced by `to` (malloc'd). */
static char *replace(const char *text, const char *from, const char *to) {
  size_t n = 0;
  for (const char *p = strstr(text, from); p; p = strstr(p + strlen(from), from)) n++;
  char *out = malloc(strlen(text) + n * strlen(to) + 1);
  CHECK(out != NULL);
  char *w = out;
  const char *r = text;
  for (const char *p = strstr(r, from); p; p = strstr(r, from)) {
    memcpy(w, r, (size_t)(p - r));
    w += p - r;
    memcpy(w, to, strlen(to));
    w += strlen(to);
    r = p + strlen(from);
  }
  strcpy(w, r);
  return out;
}

static void write_doc(const char *run, const char *name, const char *json) {
  char path[8192];
  snprintf(path, sizeof path, "%s/%s.json", run, name);
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  CHECK(fputs(json, f) >= 0);
  CHECK(fclose(f) == 0);
}

/* The run's events, but disk progress, as the text of a JSON array. */
struct events {
  char *text;
  size_t len;
};

static void on_event(void *userdata, const char *json) {
  struct events *ev = userdata;
  /* Every document leads with apiVersion and kind. */
  CHECK(strncmp(json, "{\"apiVersion\":\"vmigrate.dev/v1alpha1\",\"kind\":\"MigrationEvent\",", 62) == 0);
  if (strstr(json, "\"event\":\"disk\"") != NULL) return;
  size_t add = strlen(json) + 2;
  ev->text = realloc(ev->text, ev->len + add + 2);
  CHECK(ev->text != NULL);
  ev->text[ev->len] = ev->len == 0 ? '[' : ',';
  memcpy(ev->text + ev->len + 1, json, strlen(json) + 1);
  ev->len += 1 + strlen(json);
}

/* The last copy progress event. */
static void on_copy(void *userdata, const char *json) {
  char **last = userdata;
  CHECK(strncmp(json, "{\"apiVersion\":\"vmigrate.dev/v1alpha1\",\"kind\":\"CopyProgress\",", 60) == 0);
  free(*last);
  *last = strdup(json);
  CHECK(*last != NULL);
}

int main(int argc, char **argv) {
  CHECK(argc == 5);
  const char *lab = argv[1], *template_path = argv[2], *scratch = argv[3], *image = argv[4];
  char run[2048], out[4096], status_path[4096], copy_path[4096];
  CHECK(strlen(scratch) < sizeof run - 16);
  snprintf(run, sizeof run, "%s/runXXXXXX", scratch);
  CHECK(mkdtemp(run) != NULL);
  snprintf(out, sizeof out, "%s/out", run);
  snprintf(status_path, sizeof status_path, "%s/status.json", run);
  snprintf(copy_path, sizeof copy_path, "%s/copy.raw", run);

  char *template_text = read_file(template_path);
  char *with_lab = replace(template_text, "@LAB@", lab);
  char *plan_text = replace(with_lab, "@OUT@", out);
  free(template_text);
  free(with_lab);

  /* Inventory, then validation against it (the document goes back in as it came out). */
  char url[4200];
  snprintf(url, sizeof url, "vmx://%s", lab);
  vmigrate_source *source = NULL;
  CHECK_OK(vmigrate_source_new(url, NULL, NULL, NULL, NULL, false, &source));
  char *inventory = NULL;
  CHECK_OK(vmigrate_source_inventory(source, &inventory));
  write_doc(run, "inventory", inventory);
  vmigrate_source_free(source);

  vmigrate_plan *plan = NULL;
  CHECK_OK(vmigrate_plan_new_from_str(plan_text, &plan));
  free(plan_text);
  char *validation = NULL;
  bool blocked = true;
  CHECK_OK(vmigrate_plan_validate(plan, inventory, &validation, &blocked));
  CHECK(!blocked);
  write_doc(run, "plan-validation", validation);
  vmigrate_string_free(validation);
  /* An inventory document of another apiVersion is refused, not misread. */
  char *foreign = replace(inventory, "\"apiVersion\":\"vmigrate.dev/v1alpha1\"", "\"apiVersion\":\"vmigrate.dev/v9\"");
  CHECK(strcmp(foreign, inventory) != 0);
  validation = NULL;
  EXPECT_RC(vmigrate_plan_validate(plan, foreign, &validation, &blocked), VMIGRATE_RESULT_INVALID_ARGUMENT);
  CHECK(validation == NULL);
  CHECK(strstr(last_error(), "apiVersion") != NULL);
  free(foreign);
  vmigrate_string_free(inventory);

  /* The run: its events, its final status, and the status file read back. */
  vmigrate_migration *migration = NULL;
  CHECK_OK(vmigrate_migration_new(plan, status_path, &migration));
  vmigrate_plan_free(plan);
  struct events ev = {NULL, 0};
  char *status = NULL;
  CHECK_OK(vmigrate_migration_run(migration, on_event, &ev, &status));
  CHECK(ev.text != NULL);
  strcat(ev.text, "]");
  write_doc(run, "migration-events", ev.text);
  free(ev.text);
  write_doc(run, "plan-status", status);
  vmigrate_string_free(status);
  vmigrate_migration_free(migration);
  char *loaded = NULL;
  CHECK_OK(vmigrate_status_load(status_path, &loaded));
  write_doc(run, "plan-status-loaded", loaded);
  vmigrate_string_free(loaded);

  /* A verified copy of the fixed image. */
  char *last = NULL;
  char *stats = NULL;
  CHECK_OK(vmigrate_copy_disk(image, copy_path, true, on_copy, &last, &stats));
  CHECK(last != NULL);
  write_doc(run, "copy-stats", stats);
  write_doc(run, "copy-progress", last);
  vmigrate_string_free(stats);
  free(last);

  CHECK_OK(vmigrate_shutdown());
  printf("run: %s\n", run);
  return 0;
}
