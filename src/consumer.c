/*
 * consumer.c — the poll thread. It never runs a handler and never sleeps on one: it polls,
 * wraps records into items, queues them as ready for the lanes (worker.c hands them out while
 * fewer than max_inflight are in flight), stops taking records when the ready queue is full,
 * stores finished prefixes for librdkafka's auto-commit, and handles cooperative rebalances
 * (revoke: stop, drain within a budget, commit, release).
 *
 * Back-pressure: every assigned partition's queue is forwarded to one message queue (msgq),
 * apart from the consumer queue that carries rebalances and errors. When max_inflight records
 * are in flight and ready_max more are ready, the loop simply stops taking from msgq while it
 * keeps polling the consumer queue; librdkafka then stops fetching once its bounded prefetch
 * (queued.max.messages.kbytes) is full, and the nudge thread wakes its fetchers as the loop
 * drains msgq again (nudge.h).
 * Unlike rd_kafka_pause_partitions, this keeps the prefetched records: pausing purges them,
 * and in librdkafka 2.0.2 a resume takes effect only at the broker thread's next one-second
 * tick (measured: 10,000 records took 10.4 s with pause/resume cycles).
 *
 * Idle wait: with nothing to hand out, the loop sleeps in poll(2) on an eventfd that librdkafka
 * writes when msgq or the consumer queue goes from empty to non-empty, so a record and a
 * rebalance both end the wait at once (a wait on msgq alone left an assignment unserved for up
 * to its timeout: 90-100 ms at every start).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <jansson.h>

#include "consumer.h"
#include "log.h"
#include "nudge.h"
#include "pipeline.h"
#include "report.h"

/* Records taken from librdkafka per poll-loop turn. */
#define POLL_BATCH 512
/* How often finished positions are stored for librdkafka's auto-commit; an idle loop wakes
 * for it while a store is due (see store_due). */
#define STORE_INTERVAL_MS 20

typedef struct usher_consumer {
    usher_app *app;
    rd_kafka_t *rk;
    rd_kafka_queue_t *msgq;  /* every assigned partition's records */
    rd_kafka_queue_t *cq;    /* the consumer queue: rebalances and errors */
    int wakefd;              /* eventfd librdkafka writes when msgq or cq gets something */
    usher_partition **parts; /* the current assignment; poll thread only */
    usher_partition *last;   /* the partition of the previous record (records come in runs) */
    size_t nparts, cap;
    int64_t drain_deadline;  /* set during shutdown so a close-time revoke shares the budget */
    usher_reporter *reporter;
    usher_nudge *nudge;      /* wakes the fetchers after back-pressure (see nudge.h) */
} usher_consumer;

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* The tracker for topic/partition in the current assignment, or NULL. */
static usher_partition *find_part(usher_consumer *c, const char *topic, int32_t partition,
                                  size_t *index)
{
    for (size_t i = 0; i < c->nparts; i++) {
        if (c->parts[i]->partition == partition && strcmp(c->parts[i]->topic, topic) == 0) {
            if (index != NULL)
                *index = i;
            return c->parts[i];
        }
    }
    return NULL;
}

/* Formats a partition list as "topic[0,1,2] other[3]" for logs. */
static void describe(const rd_kafka_topic_partition_list_t *l, char *buf, size_t n)
{
    size_t k = 0;
    const char *prev = NULL;

    buf[0] = 0;
    for (int i = 0; i < l->cnt && k + 32 < n; i++) {
        const rd_kafka_topic_partition_t *tp = &l->elems[i];
        if (prev == NULL || strcmp(prev, tp->topic) != 0)
            k += (size_t)snprintf(buf + k, n - k, "%s%s%s[%" PRId32, prev ? "] " : "",
                                  tp->topic, "", tp->partition);
        else
            k += (size_t)snprintf(buf + k, n - k, ",%" PRId32, tp->partition);
        prev = tp->topic;
    }
    if (prev != NULL && k + 1 < n)
        snprintf(buf + k, n - k, "]");
}

/* p's finished position when it is not stored yet, else -1. */
static int64_t unstored_position(usher_partition *p)
{
    int64_t pos = usher_partition_position(p);

    return pos >= 0 && pos > p->stored ? pos : -1;
}

/* Stores the finished prefix of every assigned partition for librdkafka's auto-commit, which
 * commits stored offsets every commit_interval_ms — and, unlike a commit from here, never while
 * the group is rebalancing: a commit sent during a rejoin reaches the coordinator after the
 * JoinGroup, carries a stale generation, and librdkafka 2.0.2 answers the ILLEGAL_GENERATION by
 * dropping the whole assignment. Local and non-blocking. */
static void store_positions(usher_consumer *c)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)c->nparts + 1);

    for (size_t i = 0; i < c->nparts; i++) {
        usher_partition *p = c->parts[i];
        int64_t pos = unstored_position(p);
        if (pos < 0)
            continue;
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = pos;
        p->stored = pos;
    }
    if (l->cnt > 0)
        rd_kafka_offsets_store(c->rk, l);
    for (int i = 0; i < l->cnt; i++) {
        if (l->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            usher_partition *p = find_part(c, l->elems[i].topic, l->elems[i].partition, NULL);
            if (p != NULL)
                p->stored = -1; /* store again next time */
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Commits the finished prefix of ps now and waits for the broker. Used on a revoke and at
 * shutdown, where the member's generation is current; records what the broker acknowledged. */
static void commit_now(usher_consumer *c, usher_partition **ps, size_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n + 1);
    rd_kafka_resp_err_t err;

    for (size_t i = 0; i < n; i++) {
        int64_t pos = usher_partition_position(ps[i]);
        if (pos > 0 && pos > atomic_load(&ps[i]->committed))
            rd_kafka_topic_partition_list_add(l, ps[i]->topic, ps[i]->partition)->offset = pos;
    }
    if (l->cnt == 0)
        goto out;
    /* Stored too: librdkafka commits the stored offsets again when it unassigns, and an older
     * stored offset would move the committed one back. */
    rd_kafka_offsets_store(c->rk, l);
    for (int i = 0; i < l->cnt; i++) {
        usher_partition *p = find_part(c, l->elems[i].topic, l->elems[i].partition, NULL);
        if (p != NULL && l->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
            l->elems[i].offset > p->stored)
            p->stored = l->elems[i].offset;
    }
    err = rd_kafka_commit(c->rk, l, 0);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        usher_warn("commit failed: %s", rd_kafka_err2str(err));
        goto out;
    }
    for (int i = 0; i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &l->elems[i];
        for (size_t j = 0; j < n; j++)
            if (tp->err == RD_KAFKA_RESP_ERR_NO_ERROR && ps[j]->partition == tp->partition &&
                strcmp(ps[j]->topic, tp->topic) == 0 &&
                tp->offset > atomic_load(&ps[j]->committed))
                atomic_store(&ps[j]->committed, tp->offset);
    }
out:
    rd_kafka_topic_partition_list_destroy(l);
}

/* Commit results (auto-commits and commit_now): record what the broker acknowledged. A failed
 * auto-commit is simply made again at the next interval from the stored offsets. */
static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    usher_consumer *c = opaque;

    (void)rk;
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        usher_warn("commit failed: %s", rd_kafka_err2str(err));
    for (int i = 0; offsets != NULL && i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        usher_partition *p = find_part(c, tp->topic, tp->partition, NULL);
        if (p == NULL)
            continue;
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR && tp->err == RD_KAFKA_RESP_ERR_NO_ERROR &&
            tp->offset > atomic_load(&p->committed))
            atomic_store(&p->committed, tp->offset);
    }
}

/* Waits until no item of ps is queued or running, or the deadline passes. Marks them revoked
 * first so nothing new starts and retry waits end. */
static void drain(usher_consumer *c, usher_partition **ps, size_t n, int64_t deadline)
{
    usher_app *app = c->app;

    for (size_t i = 0; i < n; i++)
        atomic_store(&ps[i]->revoked, true);
    usher_workers_dispatch_all(app); /* (the lanes abandon the revoked ones) */
    usher_workers_wake(app);
    atomic_fetch_add(&app->drainers, 1);
    pthread_mutex_lock(&app->drain_lock);
    for (;;) {
        int busy = 0;
        for (size_t i = 0; i < n; i++)
            busy += atomic_load(&ps[i]->pending);
        if (busy == 0 || usher_now_ms() >= deadline) {
            if (busy != 0)
                usher_warn("%d records still running after the drain budget; they stay "
                           "uncommitted and will be redelivered", busy);
            break;
        }
        struct timespec ts;
        int64_t until = usher_wall_ms() + 50;
        ts.tv_sec = (time_t)(until / 1000);
        ts.tv_nsec = (long)(until % 1000) * 1000000L;
        pthread_cond_timedwait(&app->drain_cond, &app->drain_lock, &ts);
    }
    pthread_mutex_unlock(&app->drain_lock);
    atomic_fetch_sub(&app->drainers, 1);
}

/* Builds the lag snapshot of the current assignment (see report.h) and marks partitions
 * that have lag but whose committed offset has not moved for stuck_after_ms. */
static usher_part_report *snapshot(usher_consumer *c, size_t *n)
{
    usher_part_report *out = calloc(c->nparts ? c->nparts : 1, sizeof(*out));
    int64_t now = usher_now_ms();

    *n = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < c->nparts; i++) {
        usher_partition *p = c->parts[i];
        usher_part_report *r = &out[(*n)++];
        int64_t lo = -1, hi = -1, committed = atomic_load(&p->committed);

        snprintf(r->topic, sizeof(r->topic), "%s", p->topic);
        r->partition = p->partition;
        if (committed <= 0)
            committed = p->stats_committed;
        rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &lo, &hi);
        r->committed = committed;
        r->end = hi >= 0 ? hi : p->stats_end;
        if (committed != p->progress_committed) {
            p->progress_committed = committed;
            p->progress_at_ms = now;
        }
        r->stuck = r->end > committed && committed >= 0 &&
                   now - p->progress_at_ms >= c->app->cfg->stuck_after_ms;
        if (r->stuck)
            usher_warn("%s[%" PRId32 "] is stuck: committed %" PRId64 " of %" PRId64
                       " and no progress for %" PRId64 " ms", p->topic, p->partition, committed,
                       r->end, now - p->progress_at_ms);
    }
    return out;
}

/* librdkafka statistics: the committed and high-watermark offsets of our partitions, then a
 * liveness and lag report for the reporter thread. Runs on the poll thread. */
static int on_stats(rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
    usher_consumer *c = opaque;
    json_t *root = json_loadb(json, json_len, 0, NULL);
    size_t n = 0;

    (void)rk;
    for (size_t i = 0; root != NULL && i < c->nparts; i++) {
        usher_partition *p = c->parts[i];
        char pid[16];
        snprintf(pid, sizeof(pid), "%" PRId32, p->partition);
        json_t *tp = json_object_get(
            json_object_get(json_object_get(json_object_get(root, "topics"), p->topic),
                            "partitions"), pid);
        json_int_t committed = json_integer_value(json_object_get(tp, "committed_offset"));
        json_int_t hi = json_integer_value(json_object_get(tp, "hi_offset"));
        if (tp != NULL && committed >= 0)
            p->stats_committed = committed;
        if (tp != NULL && hi >= 0)
            p->stats_end = hi;
    }
    json_decref(root);
    if (c->reporter != NULL) {
        usher_part_report *snap = snapshot(c, &n);
        if (snap != NULL)
            usher_reporter_publish(c->reporter, snap, n, atomic_load(&c->app->inflight));
        free(snap);
    }
    return 0; /* librdkafka frees json */
}

/* Cooperative rebalance: assign adds trackers; revoke stops, drains, commits and releases. */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    usher_consumer *c = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    char desc[1024];
    rd_kafka_error_t *error = NULL;

    describe(parts, desc, sizeof(desc));
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            const rd_kafka_topic_partition_t *tp = &parts->elems[i];
            if (find_part(c, tp->topic, tp->partition, NULL) != NULL)
                continue;
            if (c->nparts == c->cap) {
                size_t ncap = c->cap ? c->cap * 2 : 16;
                usher_partition **np = realloc(c->parts, ncap * sizeof(*np));
                if (np == NULL)
                    abort(); /* cannot track offsets safely: better to crash than to commit wrong */
                c->parts = np;
                c->cap = ncap;
            }
            usher_partition *p = usher_partition_new(tp->topic, tp->partition);
            rd_kafka_queue_t *q = rd_kafka_queue_get_partition(rk, tp->topic, tp->partition);
            if (p == NULL || q == NULL)
                abort();
            rd_kafka_queue_forward(q, c->msgq);
            rd_kafka_queue_destroy(q);
            c->parts[c->nparts++] = p;
        }
        usher_info("assigned %d partition(s): %s", parts->cnt, desc);
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        usher_partition **ps = calloc((size_t)parts->cnt + 1, sizeof(*ps));
        size_t n = 0;
        bool lost = rd_kafka_assignment_lost(rk);
        int64_t deadline = c->drain_deadline ? c->drain_deadline
                                             : usher_now_ms() + c->app->cfg->drain_timeout_ms;
        if (ps == NULL)
            abort();
        for (int i = 0; i < parts->cnt; i++) {
            usher_partition *p = find_part(c, parts->elems[i].topic, parts->elems[i].partition,
                                           NULL);
            if (p != NULL)
                ps[n++] = p;
        }
        usher_info("%s %d partition(s): %s", lost ? "lost" : "revoking", parts->cnt, desc);
        drain(c, ps, n, lost ? usher_now_ms() : deadline);
        if (!lost)
            commit_now(c, ps, n);
        for (size_t i = 0; i < n; i++) {
            size_t idx;
            if (c->last == ps[i])
                c->last = NULL;
            if (find_part(c, ps[i]->topic, ps[i]->partition, &idx) != NULL) {
                c->parts[idx] = c->parts[--c->nparts];
                usher_partition_unref(ps[i]);
            }
        }
        free(ps);
        if (cooperative)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    } else {
        usher_err("rebalance error: %s", rd_kafka_err2str(err));
        if (cooperative)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    }
    if (error != NULL) {
        usher_err("(un)assign failed: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
}

/* Wraps a record into an item (count_in then counts it in its partition); takes ownership of
 * msg. Returns NULL (msg destroyed) when the partition is not ours any more. */
static usher_item *wrap(usher_consumer *c, rd_kafka_message_t *msg)
{
    const char *topic = rd_kafka_topic_name(msg->rkt);
    usher_partition *p = c->last;
    rd_kafka_timestamp_type_t tstype;
    usher_item *it = NULL;

    if (p == NULL || p->partition != msg->partition || strcmp(p->topic, topic) != 0)
        p = c->last = find_part(c, topic, msg->partition, NULL);

    if (p == NULL || atomic_load(&p->revoked)) {
        rd_kafka_message_destroy(msg); /* not ours (any more): the owner reads it again */
        return NULL;
    }
    it = usher_item_new(c->app);
    if (it == NULL)
        abort();
    it->msg = msg;
    it->part = p;
    it->keyslot = -1; /* (until usher_workers_dispatch places it: no slot is counted yet) */
    it->meta.topic = topic;
    it->meta.partition = msg->partition;
    it->meta.offset = msg->offset;
    it->meta.key = msg->key;
    it->meta.key_len = msg->key_len;
    if (msg->key != NULL && c->app->cfg->ordering == USHER_ORDER_KEY)
        __builtin_prefetch(msg->key); /* the lane choice hashes it once the batch is wrapped */
    it->meta.timestamp_ms = rd_kafka_message_timestamp(msg, &tstype);
    return it;
}

/* Counts items[0..n), just wrapped, in their partitions: in the offset tracker, as pending,
 * and with a reference each; one lock and one update per run of records of one partition.
 * The caller queues them as ready before anything can serve a rebalance: a revoke hands out
 * the ready queue and then waits for the pending records of its partitions. */
static void count_in(usher_item **items, size_t n)
{
    int64_t offsets[POLL_BATCH];

    for (size_t i = 0, k; i < n; i += k) {
        usher_partition *p = items[i]->part;
        for (k = 0; i + k < n && items[i + k]->part == p && k < POLL_BATCH; k++)
            offsets[k] = items[i + k]->meta.offset;
        if (usher_partition_dispatch_n(p, offsets, k) != 0)
            abort(); /* cannot track offsets safely: better to crash than to commit wrong */
        usher_partition_ref_n(p, (int)k);
        atomic_fetch_add(&p->pending, (int)k);
    }
}

int usher_item_read_headers(usher_item *it)
{
    rd_kafka_headers_t *hdrs = NULL;
    size_t nh = 0;

    if (it->headers != NULL)
        return 0;
    if (rd_kafka_message_headers(it->msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
        nh = rd_kafka_header_cnt(hdrs);
    it->headers = it->inline_headers;
    if (nh > sizeof(it->inline_headers) / sizeof(it->inline_headers[0]) &&
        (it->headers = malloc(nh * sizeof(it->headers[0]))) == NULL)
        return -1;
    for (size_t i = 0; i < nh; i++) {
        usher_header *h = &it->headers[it->meta.header_count];
        if (rd_kafka_header_get_all(hdrs, i, &h->name, &h->value, &h->value_len) ==
            RD_KAFKA_RESP_ERR_NO_ERROR)
            it->meta.header_count++;
    }
    it->meta.headers = it->headers;
    return 0;
}

/* Builds the consumer configuration: the user's pass-through keys, then what usher needs. */
static rd_kafka_conf_t *consumer_conf(usher_consumer *c, char *errstr, size_t errstr_size)
{
    const usher_config *cfg = c->app->cfg;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char interval[32], commit_interval[32];
    const char *fixed[][2] = {
        { "bootstrap.servers", cfg->bootstrap_servers },
        { "group.id", cfg->group_id },
        { "enable.auto.commit", "true" }, /* of the offsets usher stores, see store_positions */
        { "enable.auto.offset.store", "false" },
        { "auto.commit.interval.ms", commit_interval },
        { "partition.assignment.strategy", "cooperative-sticky" },
        { "enable.partition.eof", "false" },
    };

    /* Bounded prefetch (the user may override): with msgq back-pressure this is what bounds
     * memory while workers are behind. The thresholds apply to msgq as a whole (partition
     * queues are forwarded to it). It must hold what the workers process between two nudges
     * plus a fetch round trip, about 30 ms: 8 MiB is that at over 250 MB/s (6 MiB made
     * million-record counters runs slower in 4 of 5 pairs, by about 5%). A record in flight
     * keeps its whole fetch response in memory, and each fetch request costs the broker CPU,
     * which a fast consumer shares its CPUs with: responses are 512 KiB per partition
     * (librdkafka: 1 MiB; a larger record is still fetched, librdkafka then asks for more).
     * Counters runs on the benchmark's kept topic, alternating (broker CPU; usher's rate):
     * 256 KiB 0.44-0.78 s, 350-461k/s; 512 KiB 0.36-0.63 s, 378-469k/s, faster in each of 5
     * pairs; 1 MiB 0.27-0.31 s, 485-511k/s. At 64 records in flight with slow handlers (40 s
     * on the benchmark's 160,000-record topic) usher peaked at 51.9 MiB with 256 KiB, 59.3 MiB
     * with 512 KiB (60.9-61.1 MiB over the benchmark's whole row) and 60.0 MiB after 25 s
     * with 1 MiB. */
    if (rd_kafka_conf_set(conf, "queued.max.messages.kbytes", "8192", errstr, errstr_size) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "queued.min.messages", "100000", errstr, errstr_size) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "max.partition.fetch.bytes", "524288", errstr, errstr_size) !=
            RD_KAFKA_CONF_OK)
        goto fail;
    snprintf(interval, sizeof(interval), "%" PRId64, cfg->report_interval_ms);
    snprintf(commit_interval, sizeof(commit_interval), "%" PRId64, cfg->commit_interval_ms);
    if (rd_kafka_conf_set(conf, "statistics.interval.ms", interval, errstr, errstr_size) !=
        RD_KAFKA_CONF_OK)
        goto fail;
    for (size_t i = 0; i < cfg->kafka_props.count; i++) {
        const usher_kv *kv = &cfg->kafka_props.items[i];
        if (rd_kafka_conf_set(conf, kv->key, kv->value, errstr, errstr_size) != RD_KAFKA_CONF_OK)
            goto fail;
    }
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (rd_kafka_conf_set(conf, fixed[i][0], fixed[i][1], errstr, errstr_size) !=
            RD_KAFKA_CONF_OK)
            goto fail;
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    rd_kafka_conf_set_opaque(conf, c);
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* Sleeps while max_inflight records are in flight, until drain_cond is signalled or timeout_ms
 * passed. */
static void wait_for_room(usher_app *app, int timeout_ms)
{
    struct timespec ts;
    int64_t until = usher_wall_ms() + timeout_ms;

    ts.tv_sec = (time_t)(until / 1000);
    ts.tv_nsec = (long)(until % 1000) * 1000000L;
    pthread_mutex_lock(&app->drain_lock);
    if (atomic_load(&app->inflight) >= app->cfg->max_inflight)
        pthread_cond_timedwait(&app->drain_cond, &app->drain_lock, &ts);
    pthread_mutex_unlock(&app->drain_lock);
}

/* True when a store could still move an offset: a record of the assignment is ready or
 * running, or a finished position is not stored yet. (pending drops only after the tracker has
 * the record done, so a partition read with none pending has its final position.) */
static bool store_due(usher_consumer *c)
{
    for (size_t i = 0; i < c->nparts; i++)
        if (atomic_load(&c->parts[i]->pending) > 0 || unstored_position(c->parts[i]) >= 0)
            return true;
    return false;
}

/* Sleeps until librdkafka puts something on msgq or the consumer queue, or timeout_ms passed
 * (or a signal interrupts it, when the poll thread is the one that gets it). Called right after
 * msgq was found empty, which re-arms its wake-up; the consumer queue's is re-armed by the
 * rd_kafka_consumer_poll that found it empty. */
static void wait_for_work(usher_consumer *c, int timeout_ms)
{
    struct pollfd pfd = { .fd = c->wakefd, .events = POLLIN };
    uint64_t count;

    if (rd_kafka_queue_length(c->cq) > 0)
        return; /* (the loop stopped polling it at POLL_BATCH records) */
    if (poll(&pfd, 1, timeout_ms) > 0 && read(c->wakefd, &count, sizeof(count)) < 0 &&
        errno != EAGAIN)
        usher_warn("poll loop wake-up: %s", strerror(errno));
}

/* Takes a polled message: a record is wrapped and appended to items[*n]; an error is
 * reported. Returns 1 on a fatal error. */
static int take(usher_consumer *c, rd_kafka_message_t *msg, usher_item **items, size_t *n)
{
    char errstr[512];

    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        usher_item *it = wrap(c, msg);
        if (it != NULL)
            items[(*n)++] = it;
        return 0;
    }
    if (rd_kafka_fatal_error(c->rk, errstr, sizeof(errstr)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        usher_err("fatal Kafka error: %s", errstr);
        rd_kafka_message_destroy(msg);
        return 1;
    }
    usher_warn("consumer: %s", rd_kafka_message_errstr(msg));
    rd_kafka_message_destroy(msg);
    return 0;
}

/* The poll loop; returns when a signal arrives (0) or on a fatal error (1). */
static int poll_loop(usher_consumer *c)
{
    const usher_config *cfg = c->app->cfg;
    int64_t next_store = usher_now_ms() + STORE_INTERVAL_MS;
    int64_t held_at = -1; /* when the loop last stopped taking records for want of room */
    rd_kafka_message_t *batch[POLL_BATCH];
    usher_item *items[POLL_BATCH + 1];
    rd_kafka_message_t *msg;
    int rc = 0;

    while (!stop_signal && rc == 0) {
        int room = cfg->max_inflight - atomic_load(&c->app->inflight);
        int ready = atomic_load_explicit(&c->app->ready_n, memory_order_relaxed);
        size_t n = 0, taken;
        if (ready < c->app->ready_max) {
            size_t want = (size_t)(c->app->ready_max - ready); /* (ready_max <= POLL_BATCH) */
            /* Wait for work only when nothing else can go out; then take what is already
             * there. (A batch call with a timeout waits for the whole batch.) */
            ssize_t got = 0;
            if ((batch[0] = rd_kafka_consume_queue(c->msgq, 0)) == NULL && room > 0 &&
                ready == 0) {
                /* Until the next store while one is due: the last records of a burst are then
                 * stored at most one store interval after they finish, not up to the idle
                 * wait (100 ms) later (and committed at the next auto-commit). */
                int64_t to_store = next_store - usher_now_ms();
                wait_for_work(c, !store_due(c) ? 100 : to_store < 1 ? 1 : (int)to_store);
                batch[0] = rd_kafka_consume_queue(c->msgq, 0);
            }
            if (batch[0] != NULL)
                got = 1 + (want > 1 ? rd_kafka_consume_batch_queue(c->msgq, 0, batch + 1,
                                                                   want - 1) : 0);
            for (ssize_t i = 0; i < got; i++) {
                if (rc == 0)
                    rc = take(c, batch[i], items, &n);
                else
                    rd_kafka_message_destroy(batch[i]);
            }
            count_in(items, n);
        }
        /* Ready before rd_kafka_consumer_poll can serve a revoke: its drain hands out the
         * ready queue, and a record still in items[] would hold it up for its whole budget. */
        usher_workers_dispatch(c->app, items, n);
        taken = n;
        /* Rebalances and errors; also any record that arrived before forwarding. */
        while (rc == 0 && taken < POLL_BATCH && (msg = rd_kafka_consumer_poll(c->rk, 0)) != NULL) {
            n = 0;
            rc = take(c, msg, items, &n);
            count_in(items, n);
            usher_workers_dispatch(c->app, items, n);
            taken += n;
        }
        /* Full, and nothing new taken: sleep until a record finishes (at most 20 ms, so the
         * consumer queue is still polled often). Workers hand out ready records themselves. */
        if (room <= 0 && taken == 0)
            wait_for_room(c->app, 20);
        /* After holding back, msgq may have filled and its fetchers stopped: while the loop
         * drains it (a full 8 MiB takes well under a second), keep them awake. */
        if (room <= 0)
            held_at = usher_now_ms();
        if (held_at >= 0 && usher_now_ms() - held_at < 1000)
            usher_nudge_kick(c->nudge);
        if (usher_now_ms() >= next_store) {
            store_positions(c);
            next_store = usher_now_ms() + STORE_INTERVAL_MS;
        }
    }
    if (rc != 0)
        return rc;
    usher_info("received signal %d: draining", (int)stop_signal);
    return 0;
}

int usher_run(const usher_config *cfg, usher_registry *reg)
{
    usher_app app = { .cfg = cfg, .reg = reg };
    usher_consumer c = { .app = &app, .wakefd = -1 };
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *topics = NULL;
    rd_kafka_resp_err_t err;
    char errstr[512];
    int rc = 1, workers_started = 0;
    struct sigaction sa;

    atomic_init(&app.inflight, 0);
    atomic_init(&app.ready_n, 0);
    atomic_init(&app.drainers, 0);
    app.ready_max = cfg->max_inflight < POLL_BATCH ? cfg->max_inflight : POLL_BATCH;
    atomic_init(&app.spare, NULL);
    atomic_init(&app.quit, false);
    pthread_mutex_init(&app.drain_lock, NULL);
    pthread_cond_init(&app.drain_cond, NULL);
    pthread_mutex_init(&app.dispatch_lock, NULL);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* A write to a connection the peer closed (Redis restarting) fails with EPIPE, which the
     * writer handles, instead of killing the process. */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    if (usher_redis_parse_url(cfg->redis_url, &app.redis, errstr, sizeof(errstr)) != 0) {
        usher_err("%s", errstr);
        goto out;
    }
    app.redis.connect_timeout_ms = cfg->redis_connect_timeout_ms;
    app.redis.command_timeout_ms = cfg->redis_command_timeout_ms;
    if (cfg->dlq_topic != NULL && (app.dlq = usher_dlq_new(&app, errstr, sizeof(errstr))) == NULL) {
        usher_err("dead-letter producer: %s", errstr);
        goto out;
    }
    if ((conf = consumer_conf(&c, errstr, sizeof(errstr))) == NULL) {
        usher_err("kafka: %s", errstr);
        goto out;
    }
    c.rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (c.rk == NULL) {
        rd_kafka_conf_destroy(conf);
        usher_err("kafka: %s", errstr);
        goto out;
    }
    conf = NULL; /* rd_kafka_new() took ownership of conf */
    rd_kafka_poll_set_consumer(c.rk);
    c.msgq = rd_kafka_queue_new(c.rk);
    if ((c.cq = rd_kafka_queue_get_consumer(c.rk)) == NULL) { /* (a group is configured) */
        usher_err("kafka: no consumer queue");
        goto out;
    }
    if ((c.wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        usher_err("cannot create the poll loop's wake-up: %s", strerror(errno));
        goto out;
    }
    static const uint64_t one = 1; /* (an eventfd takes 8-byte writes) */
    rd_kafka_queue_io_event_enable(c.msgq, c.wakefd, &one, sizeof(one));
    rd_kafka_queue_io_event_enable(c.cq, c.wakefd, &one, sizeof(one));
    if ((c.nudge = usher_nudge_start(c.rk)) == NULL) {
        usher_err("cannot start the fetch nudge thread");
        goto out;
    }
    workers_started = 1; /* also on failure: the workers that did start must be joined */
    if (usher_workers_start(&app, (size_t)cfg->workers, errstr, sizeof(errstr)) != 0) {
        usher_err("%s", errstr);
        goto out;
    }
    c.reporter = usher_reporter_start(cfg, &app.redis);
    topics = rd_kafka_topic_partition_list_new((int)cfg->topic_count);
    for (size_t i = 0; i < cfg->topic_count; i++)
        rd_kafka_topic_partition_list_add(topics, cfg->topics[i], RD_KAFKA_PARTITION_UA);
    if ((err = rd_kafka_subscribe(c.rk, topics)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        usher_err("subscribe: %s", rd_kafka_err2str(err));
        goto out;
    }
    usher_info("usher %s running: group %s, %zu topic(s), %d workers, %s dead-letter topic",
               USHER_VERSION, cfg->group_id, cfg->topic_count, cfg->workers,
               cfg->dlq_topic ? cfg->dlq_topic : "no");

    rc = poll_loop(&c);
    usher_workers_dispatch_all(&app); /* (what was wrapped is run or abandoned) */

    /* Drain: finish what is in flight within the budget, commit, leave the group. */
    c.drain_deadline = usher_now_ms() + cfg->drain_timeout_ms;
    atomic_fetch_add(&app.drainers, 1);
    pthread_mutex_lock(&app.drain_lock);
    while (atomic_load(&app.inflight) > 0 && usher_now_ms() < c.drain_deadline) {
        struct timespec ts;
        int64_t until = usher_wall_ms() + 50;
        ts.tv_sec = (time_t)(until / 1000);
        ts.tv_nsec = (long)(until % 1000) * 1000000L;
        pthread_cond_timedwait(&app.drain_cond, &app.drain_lock, &ts);
    }
    pthread_mutex_unlock(&app.drain_lock);
    atomic_fetch_sub(&app.drainers, 1);
    if (rc == 0)
        commit_now(&c, c.parts, c.nparts);
    if (c.reporter != NULL) {
        size_t n = 0;
        usher_part_report *snap = snapshot(&c, &n);
        usher_reporter_stop(c.reporter, snap, n);
        free(snap);
        c.reporter = NULL;
    }

out:
    atomic_store(&app.quit, true);
    usher_nudge_stop(c.nudge); /* the loop is over: nothing to wake; keep the close quiet */
    c.nudge = NULL;
    if (c.rk != NULL) {
        /* Revokes everything through on_rebalance (commits again if anything moved). */
        err = rd_kafka_consumer_close(c.rk);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
            usher_warn("consumer close: %s", rd_kafka_err2str(err));
    }
    if (c.reporter != NULL)
        usher_reporter_stop(c.reporter, NULL, 0);
    if (workers_started)
        usher_workers_join(&app);
    if (app.dlq != NULL)
        usher_dlq_destroy(app.dlq, 5000);
    usher_items_free(&app);
    for (size_t i = 0; i < c.nparts; i++)
        usher_partition_unref(c.parts[i]);
    free(c.parts);
    if (topics != NULL)
        rd_kafka_topic_partition_list_destroy(topics);
    if (c.msgq != NULL)
        rd_kafka_queue_destroy(c.msgq);
    if (c.cq != NULL)
        rd_kafka_queue_destroy(c.cq);
    if (c.rk != NULL)
        rd_kafka_destroy(c.rk);
    if (c.wakefd >= 0)
        close(c.wakefd); /* (after rd_kafka_destroy: nothing writes to it any more) */
    usher_registry_free(reg);
    usher_redis_target_free(&app.redis);
    pthread_mutex_destroy(&app.drain_lock);
    pthread_cond_destroy(&app.drain_cond);
    pthread_mutex_destroy(&app.dispatch_lock);
    if (rc == 0)
        usher_info("stopped cleanly");
    return rc;
}
