/*
 * tracker.h — per-partition offset tracking. Offsets are dispatched in increasing order and
 * finish in any order; the commit position is always the lowest unfinished offset (or one past
 * the last dispatched offset when nothing is unfinished), so a commit never skips a record whose
 * handlers have not all succeeded. Abandoned records (revoked before they finished) are simply
 * never marked done.
 */
#ifndef USHER_TRACKER_H
#define USHER_TRACKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct usher_partition {
    char *topic;
    int32_t partition;

    pthread_mutex_t lock;
    int64_t *offsets;      /* ring of unfinished-or-finished-but-not-yet-contiguous offsets */
    unsigned char *done;
    size_t head, count, cap;
    int64_t last_dispatched; /* -1 before the first dispatch */

    int64_t stored;               /* last position stored for auto-commit (poll thread only) */
    _Atomic int64_t committed;    /* last position the broker acknowledged, 0 if none yet */
    atomic_int pending;           /* records queued or running */
    atomic_bool revoked;          /* stop starting new work for this partition */
    atomic_int refs;

    /* Lag reporting (poll thread only): the latest statistics, and when the committed offset
     * last moved. */
    int64_t stats_committed, stats_end;
    int64_t progress_committed, progress_at_ms;
} usher_partition;

/* Returns a new partition tracker with one reference, or NULL on allocation failure. */
usher_partition *usher_partition_new(const char *topic, int32_t partition);
/* Takes n references. */
void usher_partition_ref_n(usher_partition *p, int n);
/* Drops a reference (n references); frees the tracker with the last one. */
void usher_partition_unref(usher_partition *p);
void usher_partition_unref_n(usher_partition *p, int n);

/* Records that offsets[0..n) were taken for work (wrapped by the poll thread), under one lock.
 * Offsets must increase. Returns 0, -1 on ENOMEM. */
int usher_partition_dispatch_n(usher_partition *p, const int64_t *offsets, size_t n);
/* Marks offsets[0..n) finished (all handlers done or dead-letter acknowledged), under one
 * lock. */
void usher_partition_done_n(usher_partition *p, const int64_t *offsets, size_t n);
/* The offset to commit: every record below it is finished. -1 when nothing was dispatched. */
int64_t usher_partition_position(usher_partition *p);
/* Number of dispatched offsets not yet covered by the position. */
size_t usher_partition_unfinished(usher_partition *p);

#endif
