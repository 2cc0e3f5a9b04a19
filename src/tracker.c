/* tracker.c — see tracker.h. */
#include <stdlib.h>
#include <string.h>

#include "tracker.h"

usher_partition *usher_partition_new(const char *topic, int32_t partition)
{
    usher_partition *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->topic = strdup(topic);
    if (p->topic == NULL) {
        free(p);
        return NULL;
    }
    p->partition = partition;
    pthread_mutex_init(&p->lock, NULL);
    p->last_dispatched = -1;
    p->stored = -1;
    atomic_init(&p->committed, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->revoked, false);
    atomic_init(&p->refs, 1);
    p->stats_committed = p->stats_end = p->progress_committed = -1;
    return p;
}

void usher_partition_ref_n(usher_partition *p, int n)
{
    atomic_fetch_add(&p->refs, n);
}

void usher_partition_unref(usher_partition *p)
{
    usher_partition_unref_n(p, 1);
}

void usher_partition_unref_n(usher_partition *p, int n)
{
    if (p == NULL || atomic_fetch_sub(&p->refs, n) != n)
        return;
    pthread_mutex_destroy(&p->lock);
    free(p->offsets);
    free(p->done);
    free(p->topic);
    free(p);
}

/* Grows the ring to at least twice its size, keeping the order. Caller holds the lock. */
static int ring_grow(usher_partition *p)
{
    size_t ncap = p->cap ? p->cap * 2 : 64;
    int64_t *offs = malloc(ncap * sizeof(*offs));
    unsigned char *done = malloc(ncap);

    if (offs == NULL || done == NULL) {
        free(offs);
        free(done);
        return -1;
    }
    for (size_t i = 0; i < p->count; i++) {
        size_t j = (p->head + i) % p->cap;
        offs[i] = p->offsets[j];
        done[i] = p->done[j];
    }
    free(p->offsets);
    free(p->done);
    p->offsets = offs;
    p->done = done;
    p->cap = ncap;
    p->head = 0;
    return 0;
}

int usher_partition_dispatch_n(usher_partition *p, const int64_t *offsets, size_t n)
{
    int rc = 0;

    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < n; i++) {
        if (p->count == p->cap && ring_grow(p) != 0) {
            rc = -1;
            break;
        }
        size_t tail = (p->head + p->count) % p->cap;
        p->offsets[tail] = offsets[i];
        p->done[tail] = 0;
        p->count++;
        p->last_dispatched = offsets[i];
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

void usher_partition_done_n(usher_partition *p, const int64_t *offsets, size_t n)
{
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < n; i++) {
        size_t lo = 0, hi = p->count;
        /* The ring holds increasing offsets: binary search in logical order. */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int64_t v = p->offsets[(p->head + mid) % p->cap];
            if (v < offsets[i])
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < p->count && p->offsets[(p->head + lo) % p->cap] == offsets[i])
            p->done[(p->head + lo) % p->cap] = 1;
    }
    while (p->count > 0 && p->done[p->head]) {
        p->head = (p->head + 1) % p->cap;
        p->count--;
    }
    pthread_mutex_unlock(&p->lock);
}

int64_t usher_partition_position(usher_partition *p)
{
    int64_t pos;

    pthread_mutex_lock(&p->lock);
    if (p->count > 0)
        pos = p->offsets[p->head];
    else
        pos = p->last_dispatched < 0 ? -1 : p->last_dispatched + 1;
    pthread_mutex_unlock(&p->lock);
    return pos;
}

size_t usher_partition_unfinished(usher_partition *p)
{
    size_t n;

    pthread_mutex_lock(&p->lock);
    n = p->count;
    pthread_mutex_unlock(&p->lock);
    return n;
}
