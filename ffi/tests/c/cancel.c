/* Cancel a running migration from another thread: the run returns VMIGRATE_RESULT_CANCELLED and
 * the status shows the VM Canceled. Usage: cancel PLAN.yaml */
#include <pthread.h>

#include "common.h"

struct shared {
  vmigrate_migration *migration;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int started, cancelled;
};

static void *canceller(void *arg) {
  struct shared *s = arg;
  pthread_mutex_lock(&s->lock);
  while (!s->started) pthread_cond_wait(&s->cond, &s->lock);
  pthread_mutex_unlock(&s->lock);
  CHECK_OK(vmigrate_migration_cancel(s->migration));
  pthread_mutex_lock(&s->lock);
  s->cancelled = 1;
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

/* On the first event, let the other thread cancel and wait until it did. */
static void on_event(void *userdata, const char *event_json) {
  struct shared *s = userdata;
  (void)event_json;
  pthread_mutex_lock(&s->lock);
  if (!s->started) {
    s->started = 1;
    pthread_cond_broadcast(&s->cond);
    while (!s->cancelled) pthread_cond_wait(&s->cond, &s->lock);
  }
  pthread_mutex_unlock(&s->lock);
}

int main(int argc, char **argv) {
  CHECK(argc == 2);
  vmigrate_plan *plan = NULL;
  CHECK_OK(vmigrate_plan_new_from_file(argv[1], &plan));
  struct shared s = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
  CHECK_OK(vmigrate_migration_new(plan, NULL, &s.migration));
  vmigrate_plan_free(plan);

  pthread_t t;
  CHECK(pthread_create(&t, NULL, canceller, &s) == 0);
  char *status = NULL;
  EXPECT_RC(vmigrate_migration_run(s.migration, on_event, &s, &status), VMIGRATE_RESULT_CANCELLED);
  CHECK(status == NULL);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(strstr(last_error(), "cancelled") != NULL);

  CHECK_OK(vmigrate_migration_status(s.migration, &status));
  printf("status after cancel: %s\n", status);
  CHECK(strstr(status, "\"phase\":\"Canceled\"") != NULL);
  CHECK(strstr(status, "\"phase\":\"Completed\"") == NULL);
  vmigrate_string_free(status);

  EXPECT_RC(vmigrate_migration_cancel(NULL), VMIGRATE_RESULT_INVALID_ARGUMENT);
  vmigrate_migration_free(s.migration);
  CHECK_OK(vmigrate_shutdown());
  printf("cancel: ok\n");
  return 0;
}
