/*
 * worker.c — worker threads: each serves one lane, normalizes its records, runs the handler
 * chain with per-(event, handler) success tracking and retries, and releases each record as
 * done, dead-lettered or abandoned. Each worker owns its Redis connection.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "normalize.h"
#include "pipeline.h"
#include "retry.h"
#include "transport.h"
#include "usher/handler.h"

enum { M_OK, M_RETRIED, M_FAILED, M_DEAD_LETTERED, M_SKIPPED, M_COUNT };
static const char *const metric_names[M_COUNT] = { "ok", "retried", "failed", "dead_lettered",
                                                   "skipped" };

#define MAX_PENDING_REASONS 16

struct usher_worker {
    usher_app *app;
    size_t id;
    pthread_t thread;
    int started;
    usher_lane lane;
    redisContext *redis;
    usher_transport transport;
    int64_t redis_retry_at;   /* monotonic ms before which we do not reconnect */
    int64_t redis_warned_at;
    uint64_t rng;
    /* Metrics not yet written to Redis: per handler, plus dead letters by reason. */
    long long (*metrics)[M_COUNT];
    long long dead_letters;
    struct { char reason[48]; long long n; } reasons[MAX_PENDING_REASONS];
    size_t reason_count;
    int64_t metrics_flushed_at;
    int handlers_announced;
};

struct usher_ctx {
    usher_worker *w;
    const usher_bound_handler *b;
    const usher_event *ev;
    usher_partition *part;
    char reason[128];
    int64_t retry_after_ms;
};

int64_t usher_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t usher_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void usher_item_finish(usher_app *app, usher_item *it, bool done)
{
    usher_partition *p = it->part;

    if (done)
        usher_partition_done(p, it->meta.offset);
    rd_kafka_message_destroy(it->msg);
    free(it->headers);
    free(it);
    atomic_fetch_sub(&p->pending, 1);
    usher_partition_unref(p);
    atomic_fetch_sub(&app->inflight, 1);
    pthread_mutex_lock(&app->drain_lock);
    pthread_cond_broadcast(&app->drain_cond);
    pthread_mutex_unlock(&app->drain_lock);
}

/* --- what handle() may call ------------------------------------------------------------- */

redisContext *usher_redis(usher_ctx *ctx)
{
    usher_worker *w = ctx->w;
    char err[256];
    int64_t now;

    if (w->redis != NULL)
        return w->redis;
    now = usher_now_ms();
    if (now < w->redis_retry_at)
        return NULL;
    w->redis = usher_redis_connect(&w->app->redis, err, sizeof(err));
    if (w->redis == NULL) {
        w->redis_retry_at = now + 250;
        if (now - w->redis_warned_at >= 5000) {
            usher_warn("worker %zu: %s", w->id, err);
            w->redis_warned_at = now;
        }
    }
    return w->redis;
}

void usher_redis_broken(usher_ctx *ctx)
{
    if (ctx->w->redis != NULL) {
        redisFree(ctx->w->redis);
        ctx->w->redis = NULL;
    }
}

usher_transport *usher_ctx_transport(usher_ctx *ctx)
{
    return &ctx->w->transport;
}

const char *usher_ctx_handler_name(usher_ctx *ctx)
{
    return ctx->b->h->name;
}

const usher_handler_conf *usher_ctx_conf(usher_ctx *ctx)
{
    return ctx->b->conf;
}

const char *usher_ctx_key_prefix(usher_ctx *ctx)
{
    return ctx->w->app->cfg->key_prefix;
}

int64_t usher_ctx_committed_offset(usher_ctx *ctx)
{
    return atomic_load(&ctx->part->committed);
}

void usher_set_reason(usher_ctx *ctx, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(ctx->reason, sizeof(ctx->reason), fmt, ap);
    va_end(ap);
}

void usher_retry_after(usher_ctx *ctx, int64_t ms)
{
    if (ms > ctx->retry_after_ms)
        ctx->retry_after_ms = ms;
}

void usher_ctx_log(usher_ctx *ctx, usher_log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    usher_logv(level, ctx->b->h->name, fmt, ap);
    va_end(ap);
}

/* Builds the marker key prefix:done:<handler>:<event id>. */
static void once_key(usher_ctx *ctx, const usher_event *ev, char *key, size_t n)
{
    snprintf(key, n, "%s:done:%s:%s", usher_ctx_key_prefix(ctx), ctx->b->h->name,
             ev->id ? ev->id : "");
}

int usher_once_done_before(usher_ctx *ctx, const usher_event *ev)
{
    redisContext *c = usher_redis(ctx);
    redisReply *r = NULL;
    char key[512];
    int rc = -1;

    if (c == NULL)
        return -1;
    once_key(ctx, ev, key, sizeof(key));
    r = redisCommand(c, "EXISTS %s", key);
    if (usher_redis_io_failed(c, r)) {
        usher_redis_broken(ctx);
        goto out;
    }
    if (r->type == REDIS_REPLY_INTEGER)
        rc = r->integer > 0;
out:
    if (r != NULL)
        freeReplyObject(r);
    return rc;
}

int usher_once_mark(usher_ctx *ctx, const usher_event *ev, long ttl_seconds)
{
    redisContext *c = usher_redis(ctx);
    redisReply *r = NULL;
    char key[512];
    int rc = -1;

    if (c == NULL)
        return -1;
    once_key(ctx, ev, key, sizeof(key));
    r = redisCommand(c, "SET %s 1 EX %ld", key, ttl_seconds > 0 ? ttl_seconds : 30L * 86400);
    if (usher_redis_io_failed(c, r)) {
        usher_redis_broken(ctx);
        goto out;
    }
    rc = r->type == REDIS_REPLY_ERROR ? -1 : 0;
out:
    if (r != NULL)
        freeReplyObject(r);
    return rc;
}

/* --- metrics ---------------------------------------------------------------------------- */

static void count_reason(usher_worker *w, const char *reason)
{
    w->dead_letters++;
    for (size_t i = 0; i < w->reason_count; i++) {
        if (strcmp(w->reasons[i].reason, reason) == 0) {
            w->reasons[i].n++;
            return;
        }
    }
    if (w->reason_count < MAX_PENDING_REASONS) {
        snprintf(w->reasons[w->reason_count].reason, sizeof(w->reasons[0].reason), "%s", reason);
        w->reasons[w->reason_count++].n = 1;
    }
}

/* Writes the pending metrics in one pipelined round trip. Metrics are best effort: when Redis
 * is down they stay pending and go out with the next successful flush. */
static void flush_metrics(usher_worker *w, bool force)
{
    usher_app *app = w->app;
    const char *prefix = app->cfg->key_prefix;
    usher_ctx ctx = { .w = w };
    redisContext *c = NULL;
    int64_t now = usher_now_ms();
    int sent = 0;

    if (!force && now - w->metrics_flushed_at < 250)
        return;
    w->metrics_flushed_at = now;
    for (size_t h = 0; h < app->reg->count; h++)
        for (int m = 0; m < M_COUNT; m++)
            sent += w->metrics[h][m] != 0;
    if (sent == 0 && w->dead_letters == 0 && w->handlers_announced)
        return;
    c = usher_redis(&ctx);
    if (c == NULL)
        return;
    sent = 0;
    if (!w->handlers_announced) {
        for (size_t h = 0; h < app->reg->count; h++, sent++)
            redisAppendCommand(c, "SADD %s:handlers %s", prefix, app->reg->items[h].h->name);
    }
    for (size_t h = 0; h < app->reg->count; h++)
        for (int m = 0; m < M_COUNT; m++)
            if (w->metrics[h][m] != 0) {
                redisAppendCommand(c, "HINCRBY %s:handler:%s %s %lld", prefix,
                                   app->reg->items[h].h->name, metric_names[m], w->metrics[h][m]);
                sent++;
            }
    if (w->dead_letters != 0) {
        redisAppendCommand(c, "INCRBY %s:dead_lettered %lld", prefix, w->dead_letters);
        sent++;
    }
    for (size_t i = 0; i < w->reason_count; i++, sent++)
        redisAppendCommand(c, "HINCRBY %s:dead_letter_reasons %s %lld", prefix,
                           w->reasons[i].reason, w->reasons[i].n);
    for (int i = 0; i < sent; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK) {
            usher_redis_broken(&ctx);
            return; /* nothing is cleared: a partial write may be repeated, never lost */
        }
        freeReplyObject(r);
    }
    w->handlers_announced = 1;
    memset(w->metrics, 0, app->reg->count * sizeof(*w->metrics));
    w->dead_letters = 0;
    w->reason_count = 0;
}

/* --- lanes ------------------------------------------------------------------------------ */

static uint64_t fnv1a(const void *data, size_t n, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

void usher_workers_dispatch(usher_app *app, usher_item *it)
{
    static atomic_uint round_robin;
    uint64_t h = 0xcbf29ce484222325ull;
    usher_lane *lane;

    switch (app->cfg->ordering) {
    case USHER_ORDER_KEY:
        if (it->meta.key != NULL) {
            h = fnv1a(it->meta.key, it->meta.key_len, h);
            break;
        }
        /* records without a key keep partition order */
        __attribute__((fallthrough));
    case USHER_ORDER_PARTITION:
        h = fnv1a(it->meta.topic, strlen(it->meta.topic), h);
        h = fnv1a(&it->meta.partition, sizeof(it->meta.partition), h);
        break;
    case USHER_ORDER_UNORDERED:
        h = atomic_fetch_add(&round_robin, 1);
        break;
    }
    lane = &app->workers[h % app->nworkers].lane;
    pthread_mutex_lock(&lane->lock);
    it->next = NULL;
    if (lane->tail != NULL)
        lane->tail->next = it;
    else
        lane->head = it;
    lane->tail = it;
    lane->len++;
    pthread_cond_signal(&lane->cond);
    pthread_mutex_unlock(&lane->lock);
}

void usher_workers_wake(usher_app *app)
{
    for (size_t i = 0; i < app->nworkers; i++) {
        usher_lane *lane = &app->workers[i].lane;
        pthread_mutex_lock(&lane->lock);
        pthread_cond_broadcast(&lane->cond);
        pthread_mutex_unlock(&lane->lock);
    }
}

/* Pops the next item, waiting up to 250 ms; NULL when none arrived or the app quits. */
static usher_item *lane_pop(usher_worker *w)
{
    usher_lane *lane = &w->lane;
    usher_item *it = NULL;
    struct timespec ts;

    pthread_mutex_lock(&lane->lock);
    if (lane->head == NULL && !atomic_load(&w->app->quit)) {
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&lane->cond, &lane->lock, &ts);
    }
    it = lane->head;
    if (it != NULL) {
        lane->head = it->next;
        if (lane->head == NULL)
            lane->tail = NULL;
        lane->len--;
    }
    pthread_mutex_unlock(&lane->lock);
    return it;
}

/* True when the item must not run (further): its partition was revoked or usher is quitting. */
static bool must_abandon(usher_worker *w, usher_item *it)
{
    return atomic_load(&it->part->revoked) || atomic_load(&w->app->quit);
}

/* Sleeps until deadline (monotonic ms) unless the item must be abandoned first. Returns false
 * when it must be abandoned. */
static bool backoff_wait(usher_worker *w, usher_item *it, int64_t deadline)
{
    usher_lane *lane = &w->lane;

    flush_metrics(w, true);
    for (;;) {
        int64_t now = usher_now_ms();
        struct timespec ts;
        int64_t until;

        if (must_abandon(w, it))
            return false;
        if (now >= deadline)
            return true;
        until = usher_wall_ms() + (deadline - now < 200 ? deadline - now : 200);
        ts.tv_sec = (time_t)(until / 1000);
        ts.tv_nsec = (long)(until % 1000) * 1000000L;
        pthread_mutex_lock(&lane->lock);
        pthread_cond_timedwait(&lane->cond, &lane->lock, &ts);
        pthread_mutex_unlock(&lane->lock);
    }
}

/* --- the handler chain ------------------------------------------------------------------ */

/* Hands the record to the dead-letter producer, or finishes it as not done if that fails. */
static void dead_letter(usher_worker *w, usher_item *it, const usher_dead_letter *dl,
                        int handler_index)
{
    usher_warn("dead-lettering %s[%" PRId32 "]@%" PRId64 ": %s%s%s (%s)", it->meta.topic,
               it->meta.partition, it->meta.offset, dl->reason, dl->handler[0] ? " in " : "",
               dl->handler, dl->detail ? dl->detail : "");
    if (handler_index >= 0)
        w->metrics[handler_index][M_DEAD_LETTERED]++;
    count_reason(w, dl->reason);
    if (usher_dlq_send(w->app->dlq, it, dl) != 0) {
        usher_err("cannot queue dead letter for %s[%" PRId32 "]@%" PRId64
                  "; the record stays uncommitted", it->meta.topic, it->meta.partition,
                  it->meta.offset);
        usher_item_finish(w->app, it, false);
    }
}

/* Runs one record to its end: done, dead-lettered, or abandoned (revoke / shutdown). */
static void process_item(usher_worker *w, usher_item *it)
{
    usher_app *app = w->app;
    const usher_registry *reg = app->reg;
    usher_batch batch = { 0 };
    unsigned char *done = NULL;
    int attempts = 0, retry_handler = -1;
    int64_t first_failure = 0, last_failure = 0, first_failure_mono = 0;
    char reason[128] = "", detail[256] = "";
    const rd_kafka_message_t *m = it->msg;

    if (usher_normalize(&app->cfg->norm, &it->meta, m->payload, m->len, &batch) != 0) {
        usher_dead_letter dl = { batch.reason, batch.detail, "", 1, usher_wall_ms(), 0 };
        dl.last_failure_ms = dl.first_failure_ms;
        if (app->dlq != NULL) {
            dead_letter(w, it, &dl, -1);
            goto out;
        }
        /* No dead-letter topic: the record blocks its partition until an operator acts. */
        usher_err("%s[%" PRId32 "]@%" PRId64 " rejected: %s (%s); no [dlq] topic is "
                  "configured, so the partition is blocked", it->meta.topic, it->meta.partition,
                  it->meta.offset, batch.reason, batch.detail);
        while (backoff_wait(w, it, usher_now_ms() + 30000))
            ;
        usher_item_finish(app, it, false);
        goto out;
    }
    if (batch.count > 0 && reg->count > 0) {
        done = calloc(batch.count * reg->count, 1);
        if (done == NULL) {
            usher_err("out of memory; %s[%" PRId32 "]@%" PRId64 " will be redelivered",
                      it->meta.topic, it->meta.partition, it->meta.offset);
            usher_item_finish(app, it, false);
            goto out;
        }
    }
    for (;;) {
        int pending = 0, failed = -1;
        int64_t wait_floor = 0;

        attempts++;
        for (size_t e = 0; e < batch.count; e++) {
            const usher_event *ev = &batch.events[e];
            for (size_t h = 0; h < reg->count; h++) {
                const usher_bound_handler *b = &reg->items[h];
                unsigned char *d = &done[e * reg->count + h];
                usher_ctx ctx = { .w = w, .b = b, .ev = ev, .part = it->part };
                usher_result r;

                if (*d || !usher_bound_wants(b, ev->type))
                    continue;
                r = b->h->handle(&ctx, ev, b->state);
                switch (r) {
                case USHER_OK:
                case USHER_SKIP:
                    *d = 1;
                    w->metrics[h][r == USHER_OK ? M_OK : M_SKIPPED]++;
                    break;
                case USHER_RETRY:
                    w->metrics[h][M_RETRIED]++;
                    if (!pending) {
                        retry_handler = (int)h;
                        snprintf(reason, sizeof(reason), "%s",
                                 ctx.reason[0] ? ctx.reason : "retry");
                    }
                    pending = 1;
                    if (ctx.retry_after_ms > wait_floor)
                        wait_floor = ctx.retry_after_ms;
                    break;
                case USHER_FAIL:
                default:
                    *d = 1; /* never re-run; the record goes to the dead-letter topic */
                    w->metrics[h][M_FAILED]++;
                    if (failed < 0) {
                        failed = (int)h;
                        snprintf(reason, sizeof(reason), "%s",
                                 ctx.reason[0] ? ctx.reason : "handler_failed");
                        snprintf(detail, sizeof(detail), "event %s (%s)",
                                 ev->id ? ev->id : "-", usher_event_type_name(ev->type));
                    }
                    break;
                }
            }
        }
        if (!pending && failed < 0) {
            usher_item_finish(app, it, true);
            goto out;
        }
        last_failure = usher_wall_ms();
        if (first_failure == 0) {
            first_failure = last_failure;
            first_failure_mono = usher_now_ms();
        }
        if (failed >= 0 && !pending) {
            usher_dead_letter dl = { reason, detail, reg->items[failed].h->name, attempts,
                                     first_failure, last_failure };
            if (app->dlq != NULL) {
                dead_letter(w, it, &dl, failed);
                goto out;
            }
            /* Without a dead-letter topic a permanent failure blocks the partition. */
            usher_err("%s[%" PRId32 "]@%" PRId64 ": handler %s failed permanently (%s); no "
                      "[dlq] topic is configured, so the partition is blocked", it->meta.topic,
                      it->meta.partition, it->meta.offset, dl.handler, reason);
            while (backoff_wait(w, it, usher_now_ms() + 30000))
                ;
            usher_item_finish(app, it, false);
            goto out;
        }
        const usher_retry_policy *pol = &reg->items[retry_handler].retry;
        if (app->dlq != NULL &&
            usher_retry_exhausted(pol, attempts, usher_now_ms() - first_failure_mono)) {
            char why[160];
            snprintf(why, sizeof(why), "retries_exhausted");
            snprintf(detail, sizeof(detail), "%s after %d attempts", reason, attempts);
            usher_dead_letter dl = { why, detail, reg->items[retry_handler].h->name, attempts,
                                     first_failure, last_failure };
            dead_letter(w, it, &dl, retry_handler);
            goto out;
        }
        int64_t delay = usher_backoff_ms(pol, attempts + 1, wait_floor, &w->rng);
        if (attempts == 1 || attempts % 10 == 0)
            usher_warn("%s[%" PRId32 "]@%" PRId64 ": handler %s asked to retry (%s), attempt "
                       "%d, next in %" PRId64 " ms", it->meta.topic, it->meta.partition,
                       it->meta.offset, reg->items[retry_handler].h->name, reason, attempts,
                       delay);
        if (!backoff_wait(w, it, usher_now_ms() + delay)) {
            usher_item_finish(app, it, false);
            goto out;
        }
    }
out:
    free(done);
    usher_batch_release(&batch);
}

static void *worker_main(void *arg)
{
    usher_worker *w = arg;

    for (;;) {
        usher_item *it = lane_pop(w);
        if (it == NULL) {
            flush_metrics(w, true);
            if (atomic_load(&w->app->quit))
                break;
            continue;
        }
        if (must_abandon(w, it))
            usher_item_finish(w->app, it, false);
        else
            process_item(w, it);
        flush_metrics(w, w->lane.head == NULL);
    }
    /* Anything still queued was never started: leave it uncommitted. */
    for (usher_item *it; (it = lane_pop(w)) != NULL;)
        usher_item_finish(w->app, it, false);
    flush_metrics(w, true);
    return NULL;
}

int usher_workers_start(usher_app *app, size_t n, char *errstr, size_t errstr_size)
{
    app->workers = calloc(n, sizeof(*app->workers));
    if (app->workers == NULL)
        goto oom;
    app->nworkers = n;
    for (size_t i = 0; i < n; i++) {
        usher_worker *w = &app->workers[i];
        w->app = app;
        w->id = i;
        w->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)usher_wall_ms() << 8) ^ (i + 1);
        pthread_mutex_init(&w->lane.lock, NULL);
        pthread_cond_init(&w->lane.cond, NULL);
        w->metrics = calloc(app->reg->count ? app->reg->count : 1, sizeof(*w->metrics));
        if (w->metrics == NULL)
            goto oom;
    }
    for (size_t i = 0; i < n; i++) {
        if (pthread_create(&app->workers[i].thread, NULL, worker_main, &app->workers[i]) != 0) {
            snprintf(errstr, errstr_size, "cannot start worker thread %zu", i);
            return -1;
        }
        app->workers[i].started = 1;
    }
    return 0;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    return -1;
}

void usher_workers_join(usher_app *app)
{
    usher_workers_wake(app);
    for (size_t i = 0; i < app->nworkers; i++) {
        usher_worker *w = &app->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        if (w->redis != NULL)
            redisFree(w->redis);
        usher_transport_free(&w->transport);
        free(w->metrics);
        pthread_mutex_destroy(&w->lane.lock);
        pthread_cond_destroy(&w->lane.cond);
    }
    free(app->workers);
    app->workers = NULL;
    app->nworkers = 0;
}
