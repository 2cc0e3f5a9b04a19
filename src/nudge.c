/* nudge.c — see nudge.h. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "nudge.h"

/* At most one nudge per interval: the longest a drained prefetch waits for its fetcher. */
#define NUDGE_INTERVAL_MS 20
/* A leader that does not answer within this does not hold the thread up longer. */
#define NUDGE_TIMEOUT_MS 500

struct usher_nudge {
    rd_kafka_t *rk;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    atomic_bool wanted; /* a kick arrived since the last nudge */
    bool quit;          /* guarded by lock */
};

/* Sleeps ms unless quit is set first; returns false on quit. Called with lock held. */
static bool nap(usher_nudge *n, int ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts); /* cond uses CLOCK_MONOTONIC (usher_nudge_start) */
    ts.tv_nsec += (long)ms * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (!n->quit && pthread_cond_timedwait(&n->cond, &n->lock, &ts) == 0)
        ;
    return !n->quit;
}

static void *nudge_main(void *arg)
{
    usher_nudge *n = arg;

    pthread_setname_np(pthread_self(), "usher-nudge");

    pthread_mutex_lock(&n->lock);
    for (;;) {
        while (!atomic_load(&n->wanted) && !n->quit)
            pthread_cond_wait(&n->cond, &n->lock);
        if (n->quit)
            break;
        atomic_store(&n->wanted, false);
        pthread_mutex_unlock(&n->lock);
        rd_kafka_topic_partition_list_t *l = NULL;
        if (rd_kafka_assignment(n->rk, &l) == RD_KAFKA_RESP_ERR_NO_ERROR && l->cnt > 0) {
            for (int i = 0; i < l->cnt; i++)
                l->elems[i].offset = RD_KAFKA_OFFSET_END; /* as a timestamp: "latest" */
            /* The answer does not matter: the requests are what wake the fetchers. */
            (void)rd_kafka_offsets_for_times(n->rk, l, NUDGE_TIMEOUT_MS);
        }
        if (l != NULL)
            rd_kafka_topic_partition_list_destroy(l);
        pthread_mutex_lock(&n->lock);
        if (!nap(n, NUDGE_INTERVAL_MS))
            break;
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

usher_nudge *usher_nudge_start(rd_kafka_t *rk)
{
    usher_nudge *n = calloc(1, sizeof(*n));
    pthread_condattr_t ca;

    if (n == NULL)
        return NULL;
    n->rk = rk;

    atomic_init(&n->wanted, false);
    pthread_mutex_init(&n->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* naps survive wall-clock steps */
    pthread_cond_init(&n->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&n->thread, NULL, nudge_main, n) != 0) {
        pthread_mutex_destroy(&n->lock);
        pthread_cond_destroy(&n->cond);
        free(n);
        return NULL;
    }
    return n;
}

void usher_nudge_kick(usher_nudge *n)
{
    if (atomic_exchange(&n->wanted, true))
        return; /* already asked for */
    pthread_mutex_lock(&n->lock);
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->lock);
}

void usher_nudge_stop(usher_nudge *n)
{
    if (n == NULL)
        return;
    pthread_mutex_lock(&n->lock);
    n->quit = true;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
    pthread_join(n->thread, NULL);
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->cond);
    free(n);
}
