/*
 * pipeline.h — the run-time objects shared by the poll thread (consumer.c), the workers
 * (worker.c) and the dead-letter producer (dlq.c).
 *
 * Ownership of a record: the poll thread wraps each rd_kafka_message_t in a usher_item, counts
 * it in its partition's tracker, and queues it as ready; it is handed (and counted in
 * app->inflight) to exactly one lane when there is room. From then on the item belongs to
 * whoever holds it (a worker, then possibly the dead-letter producer) until
 * usher_item_finish() releases it.
 */
#ifndef USHER_PIPELINE_H
#define USHER_PIPELINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "redis.h"
#include "registry.h"
#include "tracker.h"
#include "usher/event.h"

typedef struct usher_item {
    struct usher_item *next;  /* lane queue link */
    rd_kafka_message_t *msg;  /* owned */
    usher_partition *part;    /* one reference held */
    usher_kafka_meta meta;    /* points into msg */
    int dlq_attempts;         /* dead-letter produce attempts */
    int keyslot;              /* ordering = key: the key's slot in app->keyslots, or -1 */
    unsigned lane;            /* the worker whose lane it went to (while ready: its fixed
                                 lane, or UINT_MAX for any) */
    usher_header *headers;    /* meta.headers once read (usher_item_read_headers), else NULL:
                                 inline_headers, or allocated when more */
    usher_header inline_headers[4]; /* names and values point into msg */
} usher_item;

/* A FIFO of items served by one worker: records that must stay in order share a lane. */
typedef struct usher_lane {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    usher_item *head, *tail;
} usher_lane;

typedef struct usher_worker usher_worker;
typedef struct usher_dlq usher_dlq;

/* ordering = key: records whose keys hash to a slot go to the slot's lane while any of them is
 * in flight, so a key's records stay in order; an idle slot takes the least-loaded lane, so
 * different keys keep every worker busy. */
#define USHER_KEY_SLOTS 4096
typedef struct usher_keyslot {
    atomic_int inflight;
    unsigned lane; /* under dispatch_lock */
} usher_keyslot;

/* Items on a worker's lane or in its hands; one cache line each, as workers update their own. */
typedef struct usher_lane_load {
    _Alignas(64) atomic_int n;
} usher_lane_load;

typedef struct usher_app {
    const usher_config *cfg;
    usher_registry *reg;
    usher_redis_target redis;
    usher_dlq *dlq;              /* NULL when no dead-letter topic is configured */
    usher_worker *workers;
    size_t nworkers;
    usher_keyslot *keyslots;     /* USHER_KEY_SLOTS of them */
    usher_lane_load *lane_load;  /* per worker */
    /* Handing out (see usher_workers_dispatch). dispatch_lock guards the ready queue, the lane
     * choice (next_lane, the keyslots' lanes) and the appends to the lanes, so that the records
     * of a key reach their lane in order whichever thread hands them out. */
    pthread_mutex_t dispatch_lock;
    usher_item *ready_head, *ready_tail; /* wrapped records waiting for room, in order */
    atomic_int ready_n;          /* how many (written under dispatch_lock) */
    int ready_max;               /* the poll thread wraps no more ahead than this */
    unsigned next_lane;          /* where the search for a free lane starts */
    atomic_int inflight;         /* items handed to lanes and not yet finished: at most
                                    max_inflight, but for usher_workers_dispatch_all */
    _Atomic(usher_item *) spare; /* finished items for usher_item_new (never more than were
                                    wrapped at once) */
    usher_item *spare_taken;     /* poll thread only: spare items it took over */
    atomic_bool quit;            /* workers: abandon what is left and exit */
    pthread_mutex_t drain_lock;  /* with drain_cond: signalled when an item finishes, but for
                                    records a worker releases: then only while drainers > 0
                                    or the ready queue is at most half full (see settle) */
    pthread_cond_t drain_cond;
    atomic_int drainers;         /* threads waiting for a revoke's or the shutdown's records */
} usher_app;

/* A zeroed item: a finished one when there is one, else a new allocation (NULL when out of
 * memory). Poll thread only. */
usher_item *usher_item_new(usher_app *app);
/* Frees the finished items kept for reuse; call once no item is in use any more. */
void usher_items_free(usher_app *app);
/* Releases an item: when done, marks its offset finished in the tracker (so it can be
 * committed); otherwise the offset stays unfinished and is redelivered to whoever owns the
 * partition next. Thread-safe. */
void usher_item_finish(usher_app *app, usher_item *it, bool done);
/* Fills it->meta.headers from the record, once; called by the item's holder before anything
 * reads them (the poll thread leaves it to the worker: parsing a record's headers allocates,
 * and the worker is where they are freed). Returns 0, or -1 when out of memory. */
int usher_item_read_headers(usher_item *it);

/* Milliseconds (microseconds) on a monotonic clock / milliseconds since the epoch. */
int64_t usher_now_ms(void);
int64_t usher_now_us(void);
int64_t usher_wall_ms(void);

/* --- workers (worker.c) ------------------------------------------------------------------ */

/* Starts n workers. Returns 0, or -1 with errstr set. */
int usher_workers_start(usher_app *app, size_t n, char *errstr, size_t errstr_size);
/* Queues items, in order, behind the records waiting for room, then hands waiting records to
 * the lanes their ordering mode picks while fewer than max_inflight are in flight. Workers
 * hand out the next waiting records themselves as they release theirs, so a full pipeline
 * refills without waking the poll thread. */
void usher_workers_dispatch(usher_app *app, usher_item **items, size_t n);
/* Hands every waiting record to a lane, room or not (a revoke or the shutdown drain waits for
 * them to be run or abandoned there). */
void usher_workers_dispatch_all(usher_app *app);
/* Wakes every worker (after app->quit or a revoke) so waits end early. */
void usher_workers_wake(usher_app *app);
/* Joins all workers (set app->quit first); frees them. */
void usher_workers_join(usher_app *app);

/* --- dead letters (dlq.c) ---------------------------------------------------------------- */

typedef struct usher_dead_letter {
    const char *reason;   /* machine-readable */
    const char *detail;   /* human-readable, no secrets */
    const char *handler;  /* "" for records rejected before any handler ran */
    int attempts;
    int64_t first_failure_ms; /* wall clock */
    int64_t last_failure_ms;
} usher_dead_letter;

/* Creates the dead-letter producer (idempotent, acks=all) and its delivery thread. */
usher_dlq *usher_dlq_new(usher_app *app, char *errstr, size_t errstr_size);
/* Hands the item to the producer. The item finishes (done) once the broker acknowledged the
 * dead letter; a failed delivery is retried, never dropped. Returns 0, or -1 if it could not
 * even be queued (the item then still belongs to the caller). */
int usher_dlq_send(usher_dlq *d, usher_item *it, const usher_dead_letter *dl);
/* Waits up to timeout_ms for outstanding dead letters, then stops and frees the producer. */
void usher_dlq_destroy(usher_dlq *d, int timeout_ms);

#endif
