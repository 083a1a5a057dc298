/* Cancel a running call from another thread at its first event, deterministically: the event
 * callback wakes the other thread and waits until it has cancelled, so the call is still
 * running when the cancel lands. Used by the migration and the copy cancel programs. */
#ifndef VMIGRATE_TEST_CANCEL_AT_START_H
#define VMIGRATE_TEST_CANCEL_AT_START_H

#include <pthread.h>

#include "common.h"

struct cancel_at_start {
  /* What the other thread calls to cancel (vmigrate_migration_cancel, vmigrate_cancel_trigger). */
  vmigrate_result (*pull)(const void *handle);
  const void *handle;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int started, cancelled;
};

static void *cancel_at_start_thread(void *arg) {
  struct cancel_at_start *s = arg;
  pthread_mutex_lock(&s->lock);
  while (!s->started) pthread_cond_wait(&s->cond, &s->lock);
  pthread_mutex_unlock(&s->lock);
  CHECK_OK(s->pull(s->handle));
  pthread_mutex_lock(&s->lock);
  s->cancelled = 1;
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

/* Start the cancelling thread; pass `cancel_at_start_on_event` and `s` to the call. */
static inline void cancel_at_start_begin(struct cancel_at_start *s, vmigrate_result (*pull)(const void *),
                                         const void *handle) {
  *s = (struct cancel_at_start){.pull = pull, .handle = handle};
  CHECK(pthread_mutex_init(&s->lock, NULL) == 0);
  CHECK(pthread_cond_init(&s->cond, NULL) == 0);
  CHECK(pthread_create(&s->thread, NULL, cancel_at_start_thread, s) == 0);
}

/* The event callback: on the first event, let the other thread cancel and wait until it did. */
static void cancel_at_start_on_event(void *userdata, const char *event_json) {
  struct cancel_at_start *s = userdata;
  (void)event_json;
  pthread_mutex_lock(&s->lock);
  if (!s->started) {
    s->started = 1;
    pthread_cond_broadcast(&s->cond);
    while (!s->cancelled) pthread_cond_wait(&s->cond, &s->lock);
  }
  pthread_mutex_unlock(&s->lock);
}

/* After the call returned: the other thread has cancelled and is joined. */
static inline void cancel_at_start_end(struct cancel_at_start *s) {
  CHECK(pthread_join(s->thread, NULL) == 0);
  CHECK(s->cancelled);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->cond);
}

#endif
